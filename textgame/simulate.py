"""Run heuristic leader/follower pairs on scenarios and print a KPI table.

    python -m textgame.simulate --leader max_weight --followers dictator --ues 5 --episodes 200
    python -m textgame.simulate --leader max_weight round_robin idle \\
        --followers dictator dictator s_aloha --ues 2 4 6 8 10 --format csv --output kpis.csv

``--leader`` and ``--followers`` are paired position by position (a single value pairs with all).
Each (pair, UE count, RBG count) is one row: the mean of every KPI over all episodes of all seeds,
with the half-width of its 95 % confidence interval.
"""

from __future__ import annotations

import argparse
import csv
import io
import sys
from collections.abc import Sequence
from pathlib import Path

import yaml
from tqdm.auto import tqdm

from textgame.config import ConfigError, ScenarioConfig, replace_checked
from textgame.metrics import KPI_DESCRIPTIONS, KPIS, Summary, summarize
from textgame.policies import FOLLOWERS, LEADERS, make_follower, make_leader
from textgame.runner import run_episodes

DEFAULT_TABLE_KPIS = ("throughput_mbps", "fairness", "resource_efficiency",
                      "packet_success_rate", "latency_mean", "latency_p95", "collision_rate",
                      "leader_utility", "follower_utility")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m textgame.simulate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--leader", nargs="+", default=["max_weight"], choices=sorted(LEADERS),
                   help="leader (BS) policies")
    p.add_argument("--followers", nargs="+", default=["dictator"], choices=sorted(FOLLOWERS),
                   help="follower (UE) policies, paired with --leader")
    p.add_argument("--ues", nargs="+", type=int, default=None,
                   help="fixed UE counts, one row each (default: the scenario's D(I))")
    p.add_argument("--rbgs", nargs="+", type=int, default=None,
                   help="RBG counts N, one row each (default: the scenario's)")
    p.add_argument("--tbler", type=float, default=None, help="override the scenario's TBLER")
    p.add_argument("--episodes", type=int, default=200, help="episodes per row and seed")
    p.add_argument("--seeds", type=int, default=1, help="independent seeds per row (pooled)")
    p.add_argument("--seed", type=int, default=0, help="first seed")
    p.add_argument("--envs", type=int, default=256, help="environments simulated in lock step")
    p.add_argument("--config", type=Path, default=None,
                   help="YAML scenario (sections cell/traffic/channel/reward, or under 'scenario')")
    p.add_argument("--format", choices=("markdown", "csv"), default="markdown")
    p.add_argument("--kpis", nargs="+", default=list(DEFAULT_TABLE_KPIS),
                   help=f"KPIs in the markdown table, or 'all' (CSV has all): {', '.join(KPIS)}")
    p.add_argument("--output", type=Path, default=None, help="write the table here as well")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return p


def load_scenario(path: Path | None) -> ScenarioConfig:
    if path is None:
        return ScenarioConfig()
    data = yaml.safe_load(path.read_text()) or {}
    return ScenarioConfig.from_dict(data.get("scenario", data))


def pair_policies(leaders: Sequence[str], followers: Sequence[str]) -> list[tuple[str, str]]:
    if len(leaders) != len(followers) and 1 not in (len(leaders), len(followers)):
        raise ValueError(f"--leader has {len(leaders)} values and --followers {len(followers)}; "
                         "allowed: equal lengths, or one of them a single value")
    n = max(len(leaders), len(followers))
    return [(leaders[k % len(leaders)], followers[k % len(followers)]) for k in range(n)]


def scenarios(base: ScenarioConfig, ues, rbgs, tbler) -> list[tuple[ScenarioConfig, str, int]]:
    """(scenario, UE label, N) for every requested UE count and RBG count."""
    cell = base.cell if tbler is None else replace_checked(base.cell, tbler=tbler)
    out = []
    for n in rbgs or [cell.n_rbgs]:
        for i in ues or [None]:
            changes = {"n_rbgs": n}
            if i is not None:
                changes.update(ue_counts=(i,), ue_probs=None, max_ues=None)
            label = str(i) if i is not None else "/".join(map(str, cell.ue_counts))
            out.append((ScenarioConfig(replace_checked(cell, **changes), base.traffic,
                                       base.channel, base.reward), label, n))
    return out


def render(rows: list[dict], kpis: Sequence[str], fmt: str) -> str:
    keys = ("leader", "followers", "ues", "rbgs")
    if fmt == "csv":
        buffer = io.StringIO()
        fields = list(keys) + [f"{k}_{s}" for k in KPIS for s in ("mean", "ci95", "n")]
        writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n")
        writer.writeheader()
        for row in rows:
            record = {k: row[k] for k in keys}
            for k in KPIS:
                s: Summary = row["kpis"][k]
                record.update({f"{k}_mean": s.mean, f"{k}_ci95": s.ci95, f"{k}_n": s.n})
            writer.writerow(record)
        return buffer.getvalue()
    header = list(keys) + list(kpis)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [str(row[k]) for k in keys] + [str(row["kpis"][k]) for k in kpis]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def run(args: argparse.Namespace) -> str:
    kpis = list(KPIS) if args.kpis == ["all"] else args.kpis
    unknown = [k for k in kpis if k not in KPI_DESCRIPTIONS]
    if unknown:
        raise ValueError(f"--kpis {unknown[0]!r} is unknown; allowed: 'all' or {list(KPIS)}")
    for name in ("episodes", "seeds", "envs"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name} = {getattr(args, name)} is invalid; allowed: >= 1")
    pairs = pair_policies(args.leader, args.followers)
    cases = scenarios(load_scenario(args.config), args.ues, args.rbgs, args.tbler)
    total = len(pairs) * len(cases) * args.seeds * args.episodes
    rows = []
    with tqdm(total=total, unit="ep", disable=args.no_progress, file=sys.stderr) as bar:
        for scenario, ues, n in cases:
            for leader, follower in pairs:
                batches = [run_episodes(scenario, make_leader(leader, scenario.cell),
                                        make_follower(follower), args.episodes, args.envs,
                                        seed=args.seed + k, on_batch=bar.update)
                           for k in range(args.seeds)]
                rows.append({"leader": leader, "followers": follower, "ues": ues, "rbgs": n,
                             "kpis": summarize(batches)})
    return render(rows, kpis, args.format)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        table = run(args)
    except (ConfigError, ValueError) as error:
        parser.error(str(error))
    sys.stdout.write(table)
    if args.output is not None:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
