"""``agentic-mac seed``: expert seeding alone (paper §IV, design §6) — SFT of both adapters.

    agentic-mac seed --config recipes/configs/smollm2_cpu.yaml

The options of ``agentic-mac train``. Seeds the leader and follower adapters with TRL's
``SFTTrainer`` on Max-Weight/Round-Robin and obedient-follower play, prints each role's SFT
time, loss and token accuracy, then the leader's per-RBG agreement with the expert and the
followers' obedience on held-out episodes, and saves the adapters and value heads to
``<output_dir>/seeded``, a policy directory that ``--policies LLM=llm:<output_dir>/seeded`` of
``agentic-mac evaluate`` plays.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from pathlib import Path

from grammars import ROLES
from trainers.cli.args import run, set_num_threads
from trainers.cli.train import parse_args, preflight

PROG = "agentic-mac seed"


def seed(args, model_args) -> Path:
    from trainers.policy.encoding import load_tokenizer
    from trainers.policy.models import StackelbergPolicy
    from trainers.stackelberg.trainer import SEEDED, StackelbergPPOTrainer

    start = time.perf_counter()
    args = dataclasses.replace(args, expert_seeding=True)
    base_model = preflight(args, model_args)
    threads = set_num_threads(args.num_threads)
    tokenizer = load_tokenizer(model_args.model_name_or_path)
    policy = StackelbergPolicy.from_model_config(model_args, args)
    trainer = StackelbergPPOTrainer(policy, tokenizer, args, base_model_name=base_model)
    print(f"torch threads {threads}, setup {time.perf_counter() - start:.0f} s", flush=True)
    metrics = trainer.seed_with_experts()
    for role in ROLES:
        m = metrics[role]
        accuracy = m["token_accuracy_history"]
        print(f"{role}: SFT {m['train_runtime']:.0f} s, {m['train_samples_per_second']:.2f} "
              f"rows/s, mean loss {m['train_loss']:.4f}, token accuracy of the first and last "
              f"step {accuracy[0]:.3f} -> {accuracy[-1]:.3f}")
    folder = Path(args.output_dir) / SEEDED  # written by seed_with_experts
    print(f"seeded adapters in {folder}; wall time {time.perf_counter() - start:.0f} s")
    return folder


def _main(argv: Sequence[str] | None) -> int:
    seed(*parse_args(argv, PROG))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run(_main, argv, PROG)


if __name__ == "__main__":
    raise SystemExit(main())
