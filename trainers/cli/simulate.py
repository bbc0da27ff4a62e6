"""``agentic-mac simulate``: a KPI table of leader/follower pairs on scenarios.

    agentic-mac simulate --leader max_weight --followers dictator --ues 5 --episodes 200
    agentic-mac simulate --leader max_weight round_robin idle \\
        --followers dictator dictator s_aloha --ues 2 4 6 8 10 --format csv --output_dir runs/sim
    agentic-mac simulate --leader llm:runs/tiny-cpu/final --followers llm:runs/tiny-cpu/final

``--leader`` and ``--followers`` are paired position by position (a single value pairs with all).
A policy is a textgame heuristic by name, ``llm:DIR_OR_REPO`` (a trained adapter pair, its
``leader`` or ``follower`` role) or ``marl:DIR`` (a MAPPO or G-MAC model). Each (pair, UE count,
RBG count) is one row: the mean of every KPI over all episodes of all seeds, with the half-width
of its 95 % confidence interval.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from tqdm.auto import tqdm

from textgame.config import ScenarioConfig, check_int_at_least, fail_field
from textgame.metrics import KPIS
from textgame.policies import FOLLOWERS, LEADERS, make_follower, make_leader
from textgame.simulate import DEFAULT_TABLE_KPIS, Pair, pair_policies, simulate
from textgame.tables import kpi_csv, kpi_table
from trainers.cli.args import (
    CLIError,
    check_learned,
    check_output_dir_writable,
    load_scenario,
    parse,
    run,
)

PROG = "agentic-mac simulate"
OWNER = "SimulateConfig"
KINDS = ("llm", "marl")


@dataclass
class SimulateConfig:
    """Options of ``agentic-mac simulate``.

    Parameters that choose the policies:
        leader, followers: policies paired position by position (heuristics, ``llm:``, ``marl:``).
    Parameters that choose the scenarios:
        scenario, ues, rbgs, tbler.
    Parameters of the runs and the output:
        episodes, seeds, seed, n_envs, format, kpis, output_dir, disable_tqdm.
    """

    leader: list[str] = field(default_factory=lambda: ["max_weight"], metadata={
        "help": f"leader (BS) policies: one of {sorted(LEADERS)}, 'llm:DIR_OR_REPO' or "
                "'marl:DIR'"})
    followers: list[str] = field(default_factory=lambda: ["dictator"], metadata={
        "help": f"follower (UE) policies, paired with --leader: one of {sorted(FOLLOWERS)}, "
                "'llm:DIR_OR_REPO' or 'marl:DIR'"})
    scenario: str | None = field(default=None, metadata={
        "help": "base scenario: a YAML file (sections cell/traffic/channel/reward, or under "
                "'scenario') or a JSON object; default: the design doc's (§2)"})
    ues: list[int] | None = field(default=None, metadata={
        "help": "fixed UE counts, one row each (default: the scenario's D(I))"})
    rbgs: list[int] | None = field(default=None, metadata={
        "help": "RBG counts N, one row each (default: the scenario's)"})
    tbler: float | None = field(default=None, metadata={"help": "override the scenario's TBLER"})
    episodes: int = field(default=200, metadata={"help": "episodes per row and seed"})
    seeds: int = field(default=1, metadata={"help": "independent seeds per row (pooled)"})
    seed: int = field(default=0, metadata={"help": "first seed"})
    n_envs: int = field(default=256, metadata={"help": "environments simulated in lock step"})
    format: Literal["markdown", "csv"] = field(default="markdown", metadata={
        "help": "table printed on stdout"})
    kpis: list[str] = field(default_factory=lambda: list(DEFAULT_TABLE_KPIS), metadata={
        "help": f"KPIs in the markdown table, or 'all' (CSV has all): {', '.join(KPIS)}"})
    output_dir: str | None = field(default=None, metadata={
        "help": "also write results.md and results.csv here"})
    disable_tqdm: bool = field(default=False, metadata={"help": "hide the progress bar"})

    def __post_init__(self) -> None:
        for name in ("episodes", "seeds", "n_envs"):
            check_int_at_least(OWNER, name, getattr(self, name), 1)
        check_int_at_least(OWNER, "seed", self.seed, 0)
        if self.format not in ("markdown", "csv"):
            fail_field(OWNER, "format", self.format, "'markdown' or 'csv'")
        if self.kpis == ["all"]:
            self.kpis = list(KPIS)
        for kpi in self.kpis:
            if kpi not in KPIS:
                fail_field(OWNER, "kpis", kpi, f"'all' or any of {list(KPIS)}")
        for name, names in (("leader", LEADERS), ("followers", FOLLOWERS)):
            for spec in getattr(self, name):
                _check_spec(name, spec, names)
        if self.output_dir == "":
            fail_field(OWNER, "output_dir", "", "a directory path, or unset")


def _check_spec(name: str, spec: str, heuristics) -> None:
    kind, sep, path = spec.partition(":")
    if sep and kind in KINDS:
        check_learned(OWNER, name, spec, kind, path)
        return
    if spec not in heuristics:
        fail_field(OWNER, name, spec, f"one of {sorted(heuristics)}, 'llm:DIR_OR_REPO' or "
                   "'marl:DIR'")


def _learned(spec: str, role: int, ucm_levels: int):
    """Role ``role`` (0 leader, 1 follower) of a learned policy spec."""
    kind, _, path = spec.partition(":")
    if kind == "llm":
        from trainers.policy.scheduler import load_llm_policies

        return load_llm_policies(path, ucm_levels=ucm_levels)[role]
    from trainers.marl import load_marl_policies

    return load_marl_policies(path)[role]


def make_pair(leader: str, follower: str) -> Pair:
    def build(scenario: ScenarioConfig):
        k = scenario.cell.ucm_levels
        lead = (_learned(leader, 0, k) if ":" in leader
                else make_leader(leader, scenario.cell))
        follow = _learned(follower, 1, k) if ":" in follower else make_follower(follower)
        return lead, follow

    return leader, follower, build


def simulate_table(args: SimulateConfig) -> list[dict]:
    """Print (and write) the KPI table of ``args``; returns its rows."""
    try:
        pairs = [make_pair(a, b) for a, b in pair_policies(args.leader, args.followers)]
    except ValueError as error:
        raise CLIError(str(error)) from None
    out = check_output_dir_writable("output_dir", args.output_dir) if args.output_dir else None
    base = load_scenario(args.scenario)
    n_rows = len(pairs) * len(args.rbgs or [0]) * len(args.ues or [0])
    keys = ("leader", "followers", "ues", "rbgs")
    with tqdm(total=n_rows * args.seeds * args.episodes, unit="ep", disable=args.disable_tqdm,
              file=sys.stderr) as bar:
        rows = simulate(base, pairs, ues=args.ues, rbgs=args.rbgs, tbler=args.tbler,
                        episodes=args.episodes, seeds=args.seeds, seed=args.seed,
                        n_envs=args.n_envs, on_batch=bar.update)
    table, csv_text = kpi_table(rows, args.kpis, keys), kpi_csv(rows, keys)
    sys.stdout.write(table if args.format == "markdown" else csv_text)
    if out is not None:
        (out / "results.md").write_text(table)
        (out / "results.csv").write_text(csv_text)
    return rows


def _main(argv: Sequence[str] | None) -> int:
    (args,) = parse((SimulateConfig,), argv, PROG, __doc__)
    simulate_table(args)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run(_main, argv, PROG)


if __name__ == "__main__":
    raise SystemExit(main())
