"""The ``hcn`` suite: the hyper-cellular network of the paper's Table IV (textgame.network).

Every policy plays every DBS of C = 1, 2, 4, 8, 16 cells (up to 64 for numeric policies) under
each CBS partition (Equal, Proportional, Random); rows hold the network KPIs with 95 % CIs
(:data:`textgame.network_metrics.NETWORK_KPI_DESCRIPTIONS`), and :func:`scaling_check` tests the
paper's claim that throughput per cell at C = 16 stays within 10 % of C = 1.

    agentic-mac evaluate --suites hcn --policies Max-Weight=max_weight/dictator \\
        S-ALOHA=idle/s_aloha --episodes 32 --output_dir runs/eval-hcn

Policy specs are those of :func:`trainers.specs.parse_spec`; every kind plays
unchanged on each DBS through :func:`~trainers.specs.build_policy` (a MARL model
needs N_view = the N it was trained with: Equal partitions only; LLM adapters play through
:mod:`trainers.policy.scheduler`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from textgame.metrics import summarize
from textgame.network_config import NetworkConfig
from textgame.network_metrics import run_network_episodes
from textgame.partition import PARTITIONS
from trainers.evaluation.report import _pyplot, _save, line_style
from trainers.specs import PolicySpec, build_policy

HCN_CELLS = (1, 2, 4, 8, 16)
HCN_NUMERIC_CELLS = HCN_CELLS + (32, 64)
HCN_PARTITIONS = ("equal", "proportional", "random")
HCN_TABLE_KPIS = ("network_throughput_mbps", "throughput_per_cell_mbps",
                  "local_ue_throughput_mbps", "edge_ue_throughput_mbps", "fairness_ues",
                  "fairness_cells", "collision_rate", "leader_utility")


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
        leader, follower = build_policy(spec, base.scenario.cell)
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
        for k, key in enumerate(dict.fromkeys((r["policy"], r["partition"]) for r in rows)):
            points = [r for r in rows if (r["policy"], r["partition"]) == key]
            ci = [0.0 if math.isnan(r["kpis"][kpi].ci95) else r["kpis"][kpi].ci95
                  for r in points]
            ax.errorbar([r["x"] for r in points], [r["kpis"][kpi].mean for r in points],
                        yerr=ci, markersize=3, capsize=2, label=" / ".join(key),
                        **line_style(k))
        ax.set_xscale("log", base=2)
        ax.set_xlabel("cells C")
        ax.set_ylabel(title)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    return _save(plt, fig, path)
