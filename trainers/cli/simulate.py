"""``agentic-mac simulate``: a KPI table of leader/follower pairs on scenarios.

    agentic-mac simulate --leader max_weight --followers dictator --ues 5 --episodes 200
    agentic-mac simulate --leader max_weight round_robin idle \\
        --followers dictator dictator s_aloha --ues 2 4 6 8 10 --format csv --output_dir runs/sim
    agentic-mac simulate --leader llm:runs/tiny-cpu/final --followers llm:runs/tiny-cpu/final

``--leader`` and ``--followers`` are paired position by position (a single value pairs with all).
A policy (:mod:`trainers.specs`, optionally ``label=spec``) is a textgame heuristic by name, or
the ``leader`` or ``follower`` role of ``llm:DIR_OR_REPO`` (a trained adapter pair),
``marl:DIR`` (a MAPPO or G-MAC model) or ``student:DIR`` (a distilled student). Each (pair, UE
count, RBG count) is one row: the mean of every KPI over all episodes of all seeds, with the
half-width of its 95 % confidence interval.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from tqdm.auto import tqdm

from textgame.config import ScenarioConfig, check_int_at_least, fail_field
from textgame.metrics import KPIS, episodes_csv
from textgame.policies import FOLLOWERS, LEADERS
from textgame.simulate import DEFAULT_TABLE_KPIS, Pair, episode_groups, pair_policies, simulate
from textgame.tables import kpi_csv, kpi_table
from trainers.cli.args import (
    CLIError,
    check_output_dir_writable,
    load_scenario,
    parse,
    run,
)
from trainers.specs import PolicySpec, build_role, check_spec, parse_spec

PROG = "agentic-mac simulate"
OWNER = "SimulateConfig"
ROLE_OF = {"leader": "leader", "followers": "follower"}  # option -> the role it names


@dataclass
class SimulateConfig:
    """Options of ``agentic-mac simulate``.

    Parameters that choose the policies:
        leader, followers: policies paired position by position (heuristics, ``llm:``,
        ``marl:``, ``student:``).
    Parameters that choose the scenarios:
        scenario, ues, rbgs, tbler.
    Parameters of the runs and the output:
        episodes, seeds, seed, n_envs, format, kpis, output_dir, disable_tqdm.
    """

    leader: list[str] = field(default_factory=lambda: ["max_weight"], metadata={
        "help": f"leader (BS) policies: one of {sorted(LEADERS)}, 'marl:DIR', 'student:DIR' "
                "or 'llm:DIR_OR_REPO', each optionally 'label=spec'"})
    followers: list[str] = field(default_factory=lambda: ["dictator"], metadata={
        "help": f"follower (UE) policies, paired with --leader: one of {sorted(FOLLOWERS)}, "
                "'marl:DIR', 'student:DIR' or 'llm:DIR_OR_REPO', each optionally 'label=spec'"})
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
        "help": "also write results.md, results.csv and episodes.csv (every episode's KPIs) here"})
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
        for name in ("leader", "followers"):
            for text in getattr(self, name):
                check_spec(self.spec(name, text), f"{OWNER}.{name}")
        if self.output_dir == "":
            fail_field(OWNER, "output_dir", "", "a directory path, or unset")

    @staticmethod
    def spec(name: str, text: str) -> PolicySpec:
        """The spec ``text`` of the option ``name`` ('leader' or 'followers')."""
        return parse_spec(text, ROLE_OF[name], f"{OWNER}.{name}")


def make_pair(leader: PolicySpec, follower: PolicySpec) -> Pair:
    """A :data:`Pair` of one spec's leader role and another's follower role; the UEs of an LLM
    role are the follower adapter, as asked for, also for a run trained with heuristic UEs."""
    def build(scenario: ScenarioConfig):
        cell = scenario.cell
        return (build_role(leader, "leader", cell, ues_as_trained=False),
                build_role(follower, "follower", cell, ues_as_trained=False))

    return leader.label, follower.label, build


def simulate_table(args: SimulateConfig) -> list[dict]:
    """Print (and write) the KPI table of ``args``; returns its rows."""
    try:
        pairs = [make_pair(args.spec("leader", a), args.spec("followers", b))
                 for a, b in pair_policies(args.leader, args.followers)]
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
        (out / "episodes.csv").write_text(episodes_csv(episode_groups(rows)))
    return rows


def _main(argv: Sequence[str] | None) -> int:
    (args,) = parse((SimulateConfig,), argv, PROG, __doc__)
    simulate_table(args)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run(_main, argv, PROG)


if __name__ == "__main__":
    raise SystemExit(main())
