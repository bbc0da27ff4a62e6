"""``agentic-mac train-marl``: a learned MARL baseline (design §3, paper App. B-E) on the CPU.

    agentic-mac train-marl --config recipes/configs/mappo_cpu.yaml               # MAPPO at I = 5
    agentic-mac train-marl --config recipes/configs/mappo_cpu.yaml --ues 8 \\
        --output_dir runs/mappo-s-8                                              # MAPPO-S, I = 8
    agentic-mac train-marl --config recipes/configs/gmac_cpu.yaml --eval_ues 2 5 8 10

Options are the fields of ``MARLConfig`` plus ``--ues`` (the training I: one value, or several
for D(I)), ``--rbgs`` and ``--ttis`` (N and T of the training cell) and ``--eval_ues``. MAPPO-G is
the MAPPO model trained at I = 5 evaluated elsewhere. At the end the command prints the trained
policies' KPIs next to random/random and max_weight/dictator, and the wall time; every episode
behind those tables (cell, policy, seed) goes to ``<output_dir>/episodes.csv``.
"""

from __future__ import annotations

import copy
import dataclasses
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from textgame.config import check_int_at_least
from trainers.cli.args import (
    check_output_dir_writable,
    check_run_dir,
    parse,
    run,
    set_num_threads,
)
from trainers.marl.config import TRAIN_SCENARIO, MARLConfig

PROG = "agentic-mac train-marl"
BASELINES = {"random/random": ("random", "random"),
             "max_weight/dictator": ("max_weight", "dictator")}


@dataclass
class CellOverrides:
    """Shortcuts into ``MARLConfig.scenario``'s cell, and the extra evaluation cells."""

    ues: list[int] | None = field(default=None, metadata={
        "help": "training I: one UE count, or several for D(I) uniform over them"})
    rbgs: int | None = field(default=None, metadata={"help": "training N"})
    ttis: int | None = field(default=None, metadata={"help": "training T"})
    eval_ues: list[int] = field(default_factory=list, metadata={
        "help": "also evaluate on cells with these I (N, T unchanged)"})

    def __post_init__(self) -> None:
        for k in self.eval_ues:
            check_int_at_least("train-marl", "eval_ues", k, 1)

    def apply(self, config: MARLConfig) -> MARLConfig:
        scenario = copy.deepcopy(config.scenario or TRAIN_SCENARIO)
        cell = scenario.setdefault("cell", {})
        for value, key in ((self.ues, "ue_counts"), (self.rbgs, "n_rbgs"),
                           (self.ttis, "episode_ttis")):
            if value is not None:
                cell[key] = value
        if self.ues is not None:
            cell.update(ue_probs=None, max_ues=None)
        return dataclasses.replace(config, scenario=scenario)  # validated again


def train_marl(config: MARLConfig, cells: CellOverrides) -> None:
    from textgame.metrics import episodes_csv, means
    from textgame.policies import make_follower, make_leader
    from textgame.runner import run_episodes
    from textgame.tables import kpi_table
    from trainers.marl import MARLTrainer
    from trainers.marl.trainer import HEADLINE
    from trainers.runs.run_dir import EPISODES_CSV

    start = time.perf_counter()
    config = cells.apply(config)
    check_output_dir_writable("output_dir", config.output_dir)
    check_run_dir("MARLConfig", config)
    set_num_threads(config.num_threads)
    trainer = MARLTrainer(config)
    trainer.train()
    trainer.save_model()
    train_seconds = time.perf_counter() - start
    seed, episodes = config.seed + 1, config.eval_episodes
    name = {"mappo": "MAPPO", "gmac": "G-MAC"}[config.algo]
    scenarios = [("training cell", trainer.scenario)]
    scenarios += [(f"I = {n}", trainer.scenario.with_ue_counts((n,))) for n in cells.eval_ues]
    records: list = []
    for title, scenario in scenarios:
        results = {f"{name} (sampled)": trainer.play(scenario, episodes, False, seed),
                   f"{name} (greedy)": trainer.play(scenario, episodes, True, seed)}
        for label, (leader, follower) in BASELINES.items():
            results[label] = run_episodes(scenario, make_leader(leader, scenario.cell),
                                          make_follower(follower), episodes,
                                          n_envs=min(episodes, 64), seed=seed)
        records += [({"cell": title, "policy": label, "seed": seed}, result)
                    for label, result in results.items()]
        print(f"\nKPIs on the {title} ({episodes} episodes, seed {seed})")
        print(kpi_table({label: means(r) for label, r in results.items()}, HEADLINE), end="")
    (Path(config.output_dir) / EPISODES_CSV).write_text(episodes_csv(records))
    print(f"\nmodel: {config.output_dir}/final; training wall time {train_seconds:.0f} s, "
          f"total {time.perf_counter() - start:.0f} s")


def _main(argv: Sequence[str] | None) -> int:
    train_marl(*parse((MARLConfig, CellOverrides), argv, PROG, __doc__))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run(_main, argv, PROG)


if __name__ == "__main__":
    raise SystemExit(main())
