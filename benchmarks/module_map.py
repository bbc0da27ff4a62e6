"""The module map of one PPO epoch and one LLM evaluation: which ``trainers.*`` modules (and how
many of their functions) the code runs through, traced at run time on the tiny offline model.

    python benchmarks/module_map.py            # prints the two maps

Structure, not speed: it shows how far a reader has to follow one Algorithm 1 iteration, and that
playing a saved policy never enters ``trainers.stackelberg`` (design §6.2, PlayConfig).
"""

from __future__ import annotations

import collections
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
from transformers import AutoTokenizer
from trl import ModelConfig

from trainers.evaluation.suites import Evaluator, suite_cases
from trainers.policy.models import StackelbergPolicy
from trainers.policy.named_models import build_tiny_model
from trainers.runs.hub import write_trainer_config
from trainers.specs import parse_spec
from trainers.stackelberg.config import StackelbergPPOConfig
from trainers.stackelberg.trainer import StackelbergPPOTrainer

CELL = {"cell": {"ue_counts": [2, 3], "n_rbgs": 2, "episode_ttis": 3}}


def traced(run: Callable[[], object]) -> dict[str, set[str]]:
    """The functions of each ``trainers.*`` module that ``run()`` calls."""
    calls: dict[str, set[str]] = collections.defaultdict(set)

    def profile(frame, event, arg):
        module = frame.f_globals.get("__name__", "")
        if event == "call" and module.startswith("trainers."):
            calls[module].add(frame.f_code.co_qualname)

    sys.setprofile(profile)
    try:
        run()
    finally:
        sys.setprofile(None)
    return calls


def main() -> None:
    torch.set_num_threads(1)
    root = Path(tempfile.mkdtemp())
    path = build_tiny_model(root / "tiny")[0].name_or_path
    args = StackelbergPPOConfig(scenario=CELL, n_envs=2, episodes_per_epoch=2, total_epochs=1,
                                value_head_hidden=16, trainable_layers=1,
                                output_dir=str(root / "run"))
    policy = StackelbergPolicy.from_model_config(
        ModelConfig(model_name_or_path=path, lora_r=4, lora_alpha=8), args)
    trainer = StackelbergPPOTrainer(policy, AutoTokenizer.from_pretrained(path), args,
                                    base_model_name=path)
    trainer._start()
    saved = root / "saved"
    saved.mkdir()
    policy.save_adapters(saved)
    write_trainer_config(saved, args)
    evaluator, case = Evaluator(episodes=2, n_envs=2), suite_cases("ues", CELL)[0]
    runs = {"one PPO epoch (StackelbergPPOTrainer.train_epoch)": lambda: trainer.train_epoch(0),
            "one LLM evaluation (Evaluator.run, llm: spec)": lambda: evaluator.run(
                parse_spec(f"llm:{saved}"), case)}
    for title, run in runs.items():
        calls = traced(run)
        print(f"\n{title}: {len(calls)} modules, {sum(map(len, calls.values()))} functions")
        for module in sorted(calls):
            print(f"  {module:40s} {len(calls[module]):3d}")


if __name__ == "__main__":
    main()
