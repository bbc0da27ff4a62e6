"""The ``hcn`` suite: the hyper-cellular network of the paper's Table IV (textgame.network).

Every policy plays every DBS of C = 1, 2, 4, 8, 16 cells (up to 64 for numeric policies) under
each CBS partition (Equal, Proportional, Random); rows hold the network KPIs with 95 % CIs
(:data:`textgame.network_metrics.NETWORK_KPI_DESCRIPTIONS`), and :func:`scaling_check` tests the
paper's claim that throughput per cell at C = 16 stays within 10 % of C = 1.

    python -m trainers.evaluation.network --policies Max-Weight=max_weight/dictator \\
        S-ALOHA=idle/s_aloha --episodes 32 --output-dir runs/eval-hcn

Policy specs are those of :func:`trainers.evaluation.suites.parse_policy`. Heuristic pairs and
``marl:DIR`` play unchanged on each DBS (a MARL model needs N_view = the N it was trained
with: Equal partitions only); ``llm:`` specs are refused until LLM policies have a
``LeaderPolicy``/``FollowerPolicy`` wrapper (they play through the text rollout today).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import yaml

from textgame.config import CellConfig
from textgame.metrics import summarize
from textgame.network_config import NetworkConfig
from textgame.network_metrics import run_network_episodes
from textgame.partition import PARTITIONS
from textgame.policies import make_follower, make_leader
from trainers.evaluation.report import _pyplot, _save, markdown
from trainers.evaluation.suites import PolicySpec, parse_policy

HCN_CELLS = (1, 2, 4, 8, 16)
HCN_NUMERIC_CELLS = HCN_CELLS + (32, 64)
HCN_PARTITIONS = ("equal", "proportional", "random")
HCN_TABLE_KPIS = ("network_throughput_mbps", "throughput_per_cell_mbps",
                  "local_ue_throughput_mbps", "edge_ue_throughput_mbps", "fairness_ues",
                  "fairness_cells", "collision_rate", "leader_utility")


def hcn_policies(spec: PolicySpec, cell: CellConfig):
    """(leader, follower) of a spec for the network; refuses LLM specs (no policy wrapper)."""
    if spec.kind == "llm":
        raise ValueError(f"policy {spec.label!r}: LLM policies cannot play the hcn suite yet "
                         "(they have no LeaderPolicy/FollowerPolicy wrapper); allowed: "
                         "heuristic pairs and marl:DIR")
    if spec.kind == "marl":
        from trainers.marl import load_marl_policies

        return load_marl_policies(spec.path)
    return make_leader(spec.leader, cell), make_follower(spec.follower)


def evaluate_hcn(specs: Sequence[PolicySpec], base: NetworkConfig | Mapping | None = None,
                 cells: Sequence[int] | None = None,
                 partitions: Sequence[str] = HCN_PARTITIONS, episodes: int = 32,
                 lock_step_cells: int = 512, seed: int = 0,
                 on_case: Callable[[str], None] | None = None) -> list[dict]:
    """Rows ``{"policy", "suite": "hcn", "case", "x": C, "partition", "kpis", "cells"}``.

    ``cells`` defaults to :data:`HCN_NUMERIC_CELLS`; ``base`` gives the cell template and the
    network fields other than ``n_cells`` and ``partition``; ``lock_step_cells // C`` networks
    (at least one) play in lock step. All policies meet the same seeds.
    """
    if not isinstance(base, NetworkConfig):
        base = NetworkConfig.from_dict(dict(base or {}))
    for name in partitions:
        if name not in PARTITIONS:
            raise ValueError(f"partition {name!r} is unknown; allowed: {sorted(PARTITIONS)}")
    rows = []
    for spec in specs:
        leader, follower = hcn_policies(spec, base.scenario.cell)
        for partition in partitions:
            for c in cells or HCN_NUMERIC_CELLS:
                config = dataclasses.replace(base, n_cells=c, partition=partition)
                label = f"C={c}, {partition}"
                if on_case is not None:
                    on_case(f"{spec.label}: {label}")
                kpis, per_cell = run_network_episodes(config, leader, follower, episodes,
                                                      max(1, lock_step_cells // c), seed)
                rows.append({"policy": spec.label, "suite": "hcn", "case": label, "x": c,
                             "partition": partition, "kpis": summarize([kpis]),
                             "cells": per_cell})
    return rows


def scaling_check(rows: Sequence[Mapping], large: int = 16, tolerance: float = 0.10) -> str:
    """Markdown lines: throughput per cell at C = ``large`` relative to C = 1, per policy and
    partition, and whether it is within ``tolerance`` (the paper's near-linear growth)."""
    lines = [f"| policy | partition | per cell C=1 | per cell C={large} | ratio | within "
             f"{tolerance:.0%} |", "|---|---|---:|---:|---:|---|"]
    for policy in dict.fromkeys(r["policy"] for r in rows):
        for partition in dict.fromkeys(r["partition"] for r in rows):
            pick = {r["x"]: r["kpis"]["throughput_per_cell_mbps"] for r in rows
                    if r["policy"] == policy and r["partition"] == partition}
            if 1 not in pick or large not in pick:
                continue
            ratio = pick[large].mean / pick[1].mean if pick[1].mean > 0 else math.nan
            lines.append(f"| {policy} | {partition} | {pick[1]} | {pick[large]} | {ratio:.3f} "
                         f"| {'yes' if abs(ratio - 1) <= tolerance else 'no'} |")
    return "\n".join(lines) + "\n"


def plot_hcn(rows: Sequence[Mapping], path: str | Path) -> Path:
    """Network throughput and throughput per cell vs C (log2 axis), one line per policy and
    partition, with 95 % CI bars."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10.0, 3.6))
    kpis = {"network_throughput_mbps": "network throughput (Mbps)",
            "throughput_per_cell_mbps": "throughput per cell (Mbps)"}
    for ax, (kpi, title) in zip(axes, kpis.items(), strict=True):
        for key in dict.fromkeys((r["policy"], r["partition"]) for r in rows):
            points = [r for r in rows if (r["policy"], r["partition"]) == key]
            ci = [0.0 if math.isnan(r["kpis"][kpi].ci95) else r["kpis"][kpi].ci95
                  for r in points]
            ax.errorbar([r["x"] for r in points], [r["kpis"][kpi].mean for r in points],
                        yerr=ci, marker="o", markersize=3, capsize=2, label=" / ".join(key))
        ax.set_xscale("log", base=2)
        ax.set_xlabel("cells C")
        ax.set_ylabel(title)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    return _save(plt, fig, path)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m trainers.evaluation.network", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--policies", nargs="+", default=["Max-Weight=max_weight/dictator"])
    p.add_argument("--cells", type=int, nargs="+", default=list(HCN_NUMERIC_CELLS))
    p.add_argument("--partitions", nargs="+", default=list(HCN_PARTITIONS),
                   choices=sorted(PARTITIONS))
    p.add_argument("--episodes", type=int, default=32, help="network episodes per case")
    p.add_argument("--lock-step-cells", type=int, default=512, help="B * C cells in lock step")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--config", type=Path, default=None, help="YAML base network: NetworkConfig "
                   "fields and a 'scenario' section (cell/traffic/channel/reward)")
    p.add_argument("--output-dir", type=Path, default=Path("runs/eval-hcn"))
    args = p.parse_args(argv)
    try:
        base = yaml.safe_load(args.config.read_text()) if args.config else None
        rows = evaluate_hcn([parse_policy(s) for s in args.policies], base, args.cells,
                            args.partitions, args.episodes, args.lock_step_cells, args.seed,
                            lambda label: print(label, file=sys.stderr))
    except ValueError as error:  # ConfigError included
        p.error(str(error))
    table = markdown(rows, HCN_TABLE_KPIS) + "\n" + scaling_check(rows)
    out = args.output_dir
    out.mkdir(parents=True, exist_ok=True)
    (out / "hcn.md").write_text(table)
    figure = plot_hcn(rows, out / "hcn.png")
    sys.stdout.write(table + f"\nwrote {out / 'hcn.md'}, {figure}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
