"""Train a learned MARL baseline (SPEC §3, paper App. B-E) on the CPU and compare it.

    python recipes/train_marl.py --config recipes/configs/mappo_cpu.yaml        # MAPPO at I = 5
    python recipes/train_marl.py --config recipes/configs/mappo_cpu.yaml --ues 8 \
        --output_dir runs/mappo-s-8                                             # MAPPO-S, I = 8
    python recipes/train_marl.py --config recipes/configs/gmac_cpu.yaml --eval_ues 2 5 8 10

Every ``MARLConfig`` field can be set in the YAML file or as ``--field value`` (values are read
as YAML: ``--ue_hidden "[64, 64]"``); ``--ues``, ``--rbgs`` and ``--ttis`` set the training
cell's I (an integer or a list for D(I)), N and T. MAPPO-G is the MAPPO model trained at I = 5
evaluated elsewhere: ``--eval_ues`` (or ``load_marl_policies``). At the end the script prints the
trained policies' KPIs next to random/random and max_weight/dictator, and the wall time.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import logging
import time

import torch
import yaml

from textgame.config import ScenarioConfig
from textgame.metrics import summarize
from textgame.policies import make_follower, make_leader
from textgame.runner import run_episodes
from trainers.marl import MARLConfig, MARLTrainer
from trainers.marl.config import TRAIN_SCENARIO
from trainers.marl.trainer import HEADLINE

BASELINES = {"random/random": ("random", "random"),
             "max_weight/dictator": ("max_weight", "dictator")}


def parse() -> tuple[MARLConfig, argparse.Namespace]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", help="YAML file of MARLConfig fields")
    parser.add_argument("--ues", type=yaml.safe_load, help="training I (int or list for D(I))")
    parser.add_argument("--rbgs", type=int, help="training N")
    parser.add_argument("--ttis", type=int, help="training T")
    parser.add_argument("--eval_ues", type=int, nargs="*", default=[],
                        help="also evaluate on cells with these I (N, T unchanged)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (1 is fastest for these small networks)")
    for f in dataclasses.fields(MARLConfig):
        parser.add_argument(f"--{f.name}", type=yaml.safe_load, default=argparse.SUPPRESS,
                            help=f.metadata.get("help", ""))
    args = parser.parse_args()
    values = {}
    if args.config:
        with open(args.config) as stream:
            values.update(yaml.safe_load(stream) or {})
    names = {f.name for f in dataclasses.fields(MARLConfig)}
    values.update({k: v for k, v in vars(args).items() if k in names})
    scenario = copy.deepcopy(values.get("scenario") or TRAIN_SCENARIO)
    cell = scenario.setdefault("cell", {})
    for flag, key in (("ues", "ue_counts"), ("rbgs", "n_rbgs"), ("ttis", "episode_ttis")):
        value = getattr(args, flag)
        if value is not None:
            cell[key] = [value] if key == "ue_counts" and isinstance(value, int) else value
    values["scenario"] = scenario
    return MARLConfig(**values), args


def with_ues(scenario: ScenarioConfig, n_ues: int) -> ScenarioConfig:
    data = scenario.to_dict()
    data["cell"].update(ue_counts=[n_ues], max_ues=None, ue_probs=None)
    return ScenarioConfig.from_dict(data)


def kpis(scenario: ScenarioConfig, leader, follower, episodes: int, seed: int) -> dict:
    result = run_episodes(scenario, leader, follower, episodes, n_envs=min(episodes, 64),
                          seed=seed)
    return {k: s.mean for k, s in summarize([result]).items()}


def table(title: str, rows: dict[str, dict]) -> str:
    lines = [title, "| policy | " + " | ".join(HEADLINE) + " |", "|---|" + "---:|" * len(HEADLINE)]
    for name, row in rows.items():
        lines.append(f"| {name} | " + " | ".join(f"{row[k]:.4f}" for k in HEADLINE) + " |")
    return "\n".join(lines)


def main() -> None:
    start = time.perf_counter()
    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("trainers").setLevel(logging.INFO)  # 'resuming from checkpoint-N'
    config, args = parse()
    torch.set_num_threads(args.threads)
    trainer = MARLTrainer(config)
    trainer.train()
    trainer.save_model()
    train_seconds = time.perf_counter() - start
    seed, episodes = config.seed + 1, config.eval_episodes
    name = {"mappo": "MAPPO", "gmac": "G-MAC"}[config.algo]
    scenarios = [("training cell", trainer.scenario)]
    scenarios += [(f"I = {n}", with_ues(trainer.scenario, n)) for n in args.eval_ues]
    for title, scenario in scenarios:
        rows = {f"{name} (sampled)": trainer.evaluate(scenario, episodes, False, seed),
                f"{name} (greedy)": trainer.evaluate(scenario, episodes, True, seed)}
        for label, (leader, follower) in BASELINES.items():
            rows[label] = kpis(scenario, make_leader(leader, scenario.cell),
                               make_follower(follower), episodes, seed)
        print(table(f"\nKPIs on the {title} ({episodes} episodes, seed {seed})", rows))
    print(f"\nmodel: {config.output_dir}/final; training wall time {train_seconds:.0f} s, "
          f"total {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
