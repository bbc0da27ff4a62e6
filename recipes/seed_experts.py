"""Expert seeding alone (paper §IV, SPEC §6): SFT of both adapters, their agreement, saved.

    python recipes/seed_experts.py --config recipes/configs/smollm2_cpu.yaml

Takes the same YAML as ``ppo_llama1b.py`` (``StackelbergPPOConfig`` + TRL's ``ModelConfig``);
seeds the leader and follower adapters with TRL's ``SFTTrainer`` on Max-Weight/Round-Robin and
obedient-follower play, prints each role's SFT time, loss and token accuracy, then the leader's
per-RBG agreement with the expert and the followers' obedience on held-out episodes, and saves
the adapters and value heads to ``<output_dir>/seeded`` (``save_model``), a policy directory
that ``evaluate.py --policies LLM=llm:<output_dir>/seeded`` plays.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import torch
from transformers import AutoTokenizer
from trl import ModelConfig, TrlParser

from trainers.policy.models import StackelbergPolicy
from trainers.policy.named_models import RANDOM_MODELS, resolve_named_model
from trainers.stackelberg.config import ROLES, StackelbergPPOConfig
from trainers.stackelberg.trainer import StackelbergPPOTrainer


def main() -> None:
    start = time.perf_counter()
    args, model_args = TrlParser((StackelbergPPOConfig, ModelConfig)).parse_args_and_config()
    args = dataclasses.replace(args, expert_seeding=True)
    name = model_args.model_name_or_path or "tiny"
    cache = Path(args.output_dir) / f"{name}-model" if name in RANDOM_MODELS else None
    model_args.model_name_or_path = resolve_named_model(name, cache, seed=args.seed) or name
    tokenizer = AutoTokenizer.from_pretrained(model_args.model_name_or_path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    policy = StackelbergPolicy.from_model_config(model_args, args)
    trainer = StackelbergPPOTrainer(policy, tokenizer, args,
                                    base_model_name=model_args.model_name_or_path)
    print(f"torch threads {torch.get_num_threads()}, setup {time.perf_counter() - start:.0f} s",
          flush=True)
    metrics = trainer.seed_with_experts()
    for role in ROLES:
        m = metrics[role]
        accuracy = m["token_accuracy_history"]
        print(f"{role}: SFT {m['train_runtime']:.0f} s, {m['train_samples_per_second']:.2f} "
              f"rows/s, mean loss {m['train_loss']:.4f}, token accuracy of the first and last "
              f"step {accuracy[0]:.3f} -> {accuracy[-1]:.3f}")
    folder = trainer.save_model(Path(args.output_dir) / "seeded")
    print(f"seeded adapters in {folder}; wall time {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
