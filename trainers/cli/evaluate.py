"""``agentic-mac evaluate``: policies on the paper's fixed scenarios; tables and figures.

    agentic-mac evaluate --suites ues --episodes 64 \\
        --policies max_weight/dictator round_robin/dictator S-ALOHA=idle/s_aloha \\
                   LLM=llm:runs/tiny-cpu/final MAPPO-G=marl:runs/mappo-cpu/final \\
                   MAPPO-S=marl:runs/mappo-s-I{ues}/final G-MAC=marl:runs/gmac-cpu/final \\
        --training_runs LLM=runs/tiny-cpu --output_dir runs/eval

Policies (``[label=]spec``, :mod:`trainers.specs`): a heuristic pair ``LEADER/FOLLOWER``;
``marl:DIR`` (MAPPO or G-MAC, ``{ues}``/``{rbgs}`` in DIR filled per case: MAPPO-S);
``student:DIR`` (a distilled student); ``llm:DIR_OR_REPO`` (Stackelberg PPO adapters from a
run's ``final/`` or the Hub). Suites: ues (I = 2..10), ues14 (I = 2..14; with
``--training_sizes 2 4 6 8`` the trained and held-out sizes apart; ``--ue_counts 2 4 10`` plays
those sizes of a UE sweep only), rbgs (N = 3..8), tbler,
traffic (Table III), legacy (Table VII), stress (Table VIII); see ``trainers/evaluation/suites.py``.
Writes ``results.md``, ``results.csv``, ``episodes.csv`` (every episode's KPIs),
``<suite>.png`` for the sweeps and ``training.png``; ``--paired_against LABEL`` adds
``paired.md``: each policy's per-episode difference to that one, on the same episodes;
``--merge DIR ...`` adds the rows of evaluations run as separate jobs (same suites, scenario,
episodes, n_envs and seed) to the table and figures.

Under ``accelerate launch --num_processes K`` (GPUs, or CPU processes with gloo) the (case,
policy, seed) units are split across the processes and gathered into one table, with the same
numbers as one process; the hcn suite runs on the main process.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from textgame.config import check_int_at_least, fail_field
from trainers.cli.args import (
    CLIError,
    check_output_dir_writable,
    load_scenario,
    parse,
    run,
    set_num_threads,
)
from trainers.evaluation.suites import SUITES, UE_SWEEPS
from trainers.specs import check_spec, parse_spec

ALL_SUITES = (*SUITES, "hcn")
HCN_PARTITIONS = ("equal", "proportional", "random")

PROG = "agentic-mac evaluate"
OWNER = "EvaluateConfig"
DEFAULT_POLICIES = ("Max-Weight=max_weight/dictator", "Round-Robin=round_robin/dictator",
                    "S-ALOHA=idle/s_aloha", "Random=random/random")


@dataclass
class EvaluateConfig:
    """Options of ``agentic-mac evaluate``.

    Parameters that choose what plays where:
        policies, suites, ue_counts, scenario, base_model, device.
    Parameters of the runs (every policy meets the same seeds):
        episodes, n_envs, seed, seeds.
    Parameters of the output:
        output_dir, training_runs, training_sizes, merge, paired_against, disable_tqdm,
        num_threads.
    """

    policies: list[str] = field(default_factory=lambda: list(DEFAULT_POLICIES), metadata={
        "help": "policy specs, each optionally 'label=spec': LEADER/FOLLOWER, marl:DIR, "
                "student:DIR, llm:DIR_OR_REPO"})
    suites: list[str] = field(default_factory=lambda: ["ues"], metadata={
        "help": f"scenario suites, any of {list(ALL_SUITES)} (hcn: the multi-cell network of "
                "Table IV)"})
    ue_counts: list[int] = field(default_factory=list, metadata={
        "help": "cell sizes I of the UE sweeps (ues: 2..10, ues14: 2..14) to play, e.g. the "
                "training sizes and a few held-out ones; default: every size of the sweep"})
    episodes: int = field(default=64, metadata={"help": "episodes per (policy, case, seed)"})
    n_envs: int = field(default=16, metadata={"help": "environments in lock step"})
    seed: int = field(default=0, metadata={
        "help": "first seed of the environments (shared by all policies)"})
    seeds: int = field(default=1, metadata={
        "help": "independent seeds per (policy, case), pooled into one mean and 95 % CI"})
    scenario: str | None = field(default=None, metadata={
        "help": "base scenario: a YAML file (sections cell/traffic/channel/reward, or under "
                "'scenario') or a JSON object; default: the design doc's (§2)"})
    base_model: str | None = field(default=None, metadata={
        "help": "base model of the LLM policies (default: the one their adapters name)"})
    device: str | None = field(default=None, metadata={
        "help": "torch device of LLM/MARL policies (default: CPU)"})
    training_runs: list[str] = field(default_factory=list, metadata={
        "help": "'label=RUN_DIR' whose metrics.jsonl go into training.png"})
    output_dir: str = field(default="runs/evaluate", metadata={
        "help": "where results.md, results.csv and the figures go"})
    training_sizes: list[int] = field(default_factory=list, metadata={
        "help": "cell sizes I the learned policies were trained on: the UE sweeps' tables "
                "and figures show them apart from the held-out sizes"})
    paired_against: str | None = field(default=None, metadata={
        "help": "label of a policy of --policies: every other policy's per-episode difference "
                "to it on the same episodes (common random numbers), mean and 95 % CI, goes "
                "to paired.md and after the table"})
    disable_tqdm: bool = field(default=False, metadata={"help": "hide the progress bar"})
    num_threads: int | None = field(default=None, metadata={
        "help": "torch CPU threads per process; None = the cores this process may use divided "
                "among the processes of the machine (accelerate launch's LOCAL_WORLD_SIZE). Give "
                "1 when several jobs share the cores: oversubscribed threads slow LLM play ~10x"})
    merge: list[str] = field(default_factory=list, metadata={
        "help": "output dirs (or results.csv files) of earlier evaluations whose rows join this "
                "table and its figures: policies evaluated in separate jobs with the same "
                "suites, scenario, episodes, n_envs and seed (common random numbers)"})
    hcn_cells: list[int] | None = field(default=None, metadata={
        "help": "cell counts C of the hcn suite (default: 1, 2, 4, 8, 16, and also 32, 64 for "
                "policies without an LLM)"})
    hcn_partitions: list[str] = field(default_factory=lambda: list(HCN_PARTITIONS), metadata={
        "help": f"CBS partitions of the hcn suite, any of {list(HCN_PARTITIONS)}"})
    hcn_lock_step_cells: int = field(default=512, metadata={
        "help": "B x C cells simulated in lock step in the hcn suite"})

    def __post_init__(self) -> None:
        for name in ("episodes", "n_envs", "seeds"):
            check_int_at_least(OWNER, name, getattr(self, name), 1)
        check_int_at_least(OWNER, "seed", self.seed, 0)
        if self.num_threads is not None:
            check_int_at_least(OWNER, "num_threads", self.num_threads, 1)
        for suite in self.suites:
            if suite not in ALL_SUITES:
                fail_field(OWNER, "suites", suite, f"any of {list(ALL_SUITES)}")
        for name in self.hcn_partitions:
            if name not in HCN_PARTITIONS:
                fail_field(OWNER, "hcn_partitions", name, f"any of {list(HCN_PARTITIONS)}")
        for n in self.training_sizes:
            check_int_at_least(OWNER, "training_sizes", n, 1)
        sweeps = [suite for suite in self.suites if suite in UE_SWEEPS]
        if self.ue_counts and not sweeps:
            fail_field(OWNER, "ue_counts", self.ue_counts,
                       f"empty unless --suites has a UE sweep ({' or '.join(UE_SWEEPS)})")
        largest = max((UE_SWEEPS[suite] for suite in sweeps), default=0)
        for n in self.ue_counts:
            if isinstance(n, bool) or not isinstance(n, int) or not 2 <= n <= largest:
                fail_field(OWNER, "ue_counts", n, f"integers in 2..{largest} (the sizes of "
                           f"--suites {' '.join(sweeps)})")
        for c in self.hcn_cells or ():
            check_int_at_least(OWNER, "hcn_cells", c, 1)
        check_int_at_least(OWNER, "hcn_lock_step_cells", self.hcn_lock_step_cells, 1)
        if not self.output_dir:
            fail_field(OWNER, "output_dir", self.output_dir, "a directory path")

    def training_run_dirs(self) -> dict[str, Path]:
        """``{label: run directory}``; each must hold a ``metrics.jsonl``."""
        runs = {}
        for item in self.training_runs:
            label, _, path = item.rpartition("=")
            path = Path(path)
            if not (path / "metrics.jsonl").is_file():
                raise CLIError(f"training_runs = {item!r}: {str(path)!r} has no metrics.jsonl; "
                               "allowed: 'label=RUN_DIR' of a training run")
            runs[label or path.name] = path
        return runs


def preflight(args: EvaluateConfig):
    """Specs, cases, training runs and the output directory, checked before any work."""
    from trainers.evaluation.suites import suite_cases

    specs = [parse_spec(text) for text in args.policies]  # errors: "policy 'x' is invalid"
    labels = [spec.label for spec in specs]
    if args.paired_against is not None and args.paired_against not in labels:
        fail_field(OWNER, "paired_against", args.paired_against,
                   f"the label of one of --policies {labels}")
    for spec in specs:
        check_spec(spec, f"{OWNER}.policies")  # MAPPO-S paths ({ues}): per case, when built
    base = load_scenario(args.scenario) if args.scenario else None
    cases = [case for suite in args.suites if suite != "hcn"
             for case in suite_cases(suite, base)
             if not (args.ue_counts and suite in UE_SWEEPS and case.x not in args.ue_counts)]
    runs = args.training_run_dirs()
    for item in args.merge:
        if not results_csv(item).is_file():
            raise CLIError(f"merge = {item!r}: no {results_csv(item)}; allowed: the output dir "
                           "or results.csv of an earlier evaluation")
    out = check_output_dir_writable("output_dir", args.output_dir)
    return specs, cases, runs, out


def _process_group():
    """(rank, world size) under ``accelerate launch`` with several processes, else (0, 1)."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return 0, 1
    from accelerate import PartialState

    state = PartialState()
    return state.process_index, state.num_processes


def play_units(args: EvaluateConfig, specs, cases, rank: int = 0, world: int = 1,
               ) -> dict[tuple[int, int, int], dict]:
    """``{(case, spec, seed offset): {kpi: (episodes,) array}}`` for this process's share of
    the (case, policy, seed) units: unit u goes to process u mod ``world``. Every unit is
    seeded by itself, so the split changes no number."""
    from tqdm.auto import tqdm

    from trainers.evaluation.suites import Evaluator

    evaluator = Evaluator(args.episodes, args.n_envs, args.seed, args.device, args.base_model)
    units = [(c, s, k) for c in range(len(cases)) for s in range(len(specs))
             for k in range(args.seeds)][rank::world]
    out = {}
    with tqdm(total=len(units) * args.episodes, unit="ep", file=sys.stderr,
              disable=args.disable_tqdm or rank != 0) as bar:
        for c, s, k in units:
            bar.set_postfix_str(f"{cases[c].label} {specs[s].label}")
            try:
                out[c, s, k] = evaluator.run(specs[s], cases[c], bar.update, seed=args.seed + k)
            except ValueError as error:  # e.g. a MAPPO-S model missing for one case
                raise CLIError(str(error)) from None
    return out


def evaluate(args: EvaluateConfig) -> str:
    """Every policy on every case (split across processes under ``accelerate launch``); the
    main process writes the tables and figures and returns the table ('' elsewhere)."""
    from textgame.metrics import episodes_csv, summarize
    from trainers.evaluation.report import (
        PAIRED_KPIS,
        SWEEPS,
        episode_groups,
        markdown,
        paired_rows,
        plot_sweep,
        plot_training,
        to_csv,
    )

    specs, cases, runs, out = preflight(args)
    rank, world = _process_group()
    results = play_units(args, specs, cases, rank, world)
    if world > 1:
        from accelerate.utils import gather_object

        results = {key: value for part in gather_object([results]) for key, value in
                   part.items()}
    if rank != 0:
        return ""
    rows = [{"policy": spec.label, "suite": case.suite, "case": case.label, "x": case.x,
             "kpis": summarize([results[c, s, k] for k in range(args.seeds)])}
            for c, case in enumerate(cases) for s, spec in enumerate(specs)]
    rows = merged_rows(args, rows)
    table = markdown(rows, training_sizes=args.training_sizes)
    (out / "results.md").write_text(table)
    (out / "results.csv").write_text(to_csv(rows))
    labels = [spec.label for spec in specs]
    groups = episode_groups(results, cases, labels, args.seed)
    (out / "episodes.csv").write_text(episodes_csv(groups))
    extra = [out / "episodes.csv"]
    if args.paired_against is not None:
        paired = paired_rows(results, cases, labels, args.paired_against, args.seeds)
        text = (f"\n## Paired differences to {args.paired_against} (same episodes; mean and "
                "95 % CI of the per-episode difference)\n\n"
                + markdown(paired, PAIRED_KPIS, args.training_sizes))
        (out / "paired.md").write_text(text)
        table += text
        extra.append(out / "paired.md")
    figures = [plot_sweep(rows, suite, out / f"{suite}.png", args.training_sizes)
               for suite in args.suites if suite in SWEEPS]
    if "hcn" in args.suites:
        hcn_table, figure = evaluate_network(args, specs, out)
        table += hcn_table
        figures += [out / "hcn.md", figure]
    if runs:
        figures.append(plot_training({k: str(v) for k, v in runs.items()},
                                     out / "training.png"))
    files = [out / "results.md", out / "results.csv", *extra, *figures]
    return table + "\nwrote " + ", ".join(str(f) for f in files) + "\n"


def results_csv(item: str) -> Path:
    """An evaluation's ``results.csv``: ``item`` itself, or the one in the directory ``item``."""
    return Path(item) / "results.csv" if Path(item).is_dir() else Path(item)


def merged_rows(args: EvaluateConfig, rows: list[dict]) -> list[dict]:
    """``rows`` and, per case, the rows of ``args.merge``'s results after them; a merged row
    must be a case of this evaluation, over as many episodes, by a policy not yet in it."""
    from trainers.evaluation.report import read_csv

    episodes = args.episodes * args.seeds
    cases = {(r["suite"], r["case"]): r["x"] for r in rows}
    labels = {r["policy"] for r in rows}
    extra = []
    for item in args.merge:
        for row in read_csv(results_csv(item)):
            n = row["kpis"]["throughput_mbps"].n
            if (row["suite"], row["case"]) not in cases or n != episodes:
                raise CLIError(f"merge = {item!r}: {row['policy']} on {row['case']} "
                               f"({n} episodes) is not a case of this evaluation; allowed: "
                               f"results of the same suites and scenario over {episodes} "
                               "episodes")
            if row["policy"] in labels:
                raise CLIError(f"merge = {item!r}: policy {row['policy']!r} is already in the "
                               "table; allowed: distinct policy labels")
            row["x"] = cases[row["suite"], row["case"]]
            extra.append(row)
        labels |= {row["policy"] for row in extra}
    order = {key: k for k, key in enumerate(cases)}  # stable sort: merged rows after the case's
    return sorted(rows + extra, key=lambda r: order[r["suite"], r["case"]])


def evaluate_network(args: EvaluateConfig, specs, out):
    """The hcn suite: every spec on C cells x partitions; ``(markdown, figure path)``."""
    from trainers.evaluation.network import (
        HCN_CELLS,
        HCN_NUMERIC_CELLS,
        HCN_TABLE_KPIS,
        evaluate_hcn,
        plot_hcn,
        scaling_check,
    )
    from trainers.evaluation.report import markdown

    base = {"scenario": load_scenario(args.scenario).to_dict()} if args.scenario else None
    rows = []
    for spec in specs:
        cells = args.hcn_cells or (HCN_CELLS if spec.kind == "llm" else HCN_NUMERIC_CELLS)
        try:
            rows += evaluate_hcn([spec], base, cells, args.hcn_partitions, args.episodes,
                                 args.hcn_lock_step_cells, args.seed)
        except ValueError as error:
            raise CLIError(str(error)) from None
    table = markdown(rows, HCN_TABLE_KPIS) + "\n" + scaling_check(rows)
    (out / "hcn.md").write_text(table)
    return table, plot_hcn(rows, out / "hcn.png")


def _main(argv: Sequence[str] | None) -> int:
    (args,) = parse((EvaluateConfig,), argv, PROG, __doc__)
    set_num_threads(args.num_threads)
    sys.stdout.write(evaluate(args))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run(_main, argv, PROG)


if __name__ == "__main__":
    raise SystemExit(main())
