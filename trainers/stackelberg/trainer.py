"""``StackelbergPPOTrainer``: Algorithm 1 of the paper with checkpoints, logging and the Hub.

Per epoch: every process plays its own ``episodes_per_epoch`` episodes (``RolloutWorker``), then
the leader and the followers are updated separately (``ppo_update``: own adapter, value head,
optimizer, learning rate and number of PPO passes — two-timescale Stackelberg learning), the
cosine schedules step, metrics are written (JSONL, CSV, accelerate trackers) and, every
``save_every`` epochs, a checkpoint is written atomically (temporary directory + rename).

Exact resume: episodes never span epochs and their seeds are a function of (seed, epoch,
batch, process), so a checkpoint at an epoch boundary holds all the state there is: adapters,
value heads, optimizers, schedulers, the minibatch-shuffling generator, torch's and numpy's
RNG states per process, the epoch, and the metrics written so far.
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import gather_object
from tqdm.auto import tqdm

from grammars import ROLES
from textgame.metrics import summarize
from trainers.policy.chat import chat_render
from trainers.policy.encoding import PromptEncoder
from trainers.ppo import deterministic_algorithms, lr_scheduler
from trainers.runs.hub import download, write_trainer_config
from trainers.runs.run_dir import (
    CHECKPOINT_PREFIX,
    TMP_PREFIX,
    begin_checkpoint,
    clear_run,
    finish_checkpoint,
    latest_complete_checkpoint,
    list_checkpoints,
    load_json,
    load_trainer_state,
    rng_state,
    save_json,
    save_trainer_state,
    set_rng_state,
    start_run,
    write_metrics,
)
from trainers.stackelberg.config import OWNER, StackelbergPPOConfig
from trainers.stackelberg.rollout import RolloutWorker
from trainers.stackelberg.update import ppo_update

EXPERT_SEEDING, SEEDED, TRACKER_PROJECT = "expert-seeding", "seeded", "agentic-mac"
CRITIC_WARMUP, LEARNING_CURVE = "critic-warmup.json", "learning_curve.png"
RUN_EXTRAS = (EXPERT_SEEDING, SEEDED, TRACKER_PROJECT, CRITIC_WARMUP,
              LEARNING_CURVE)  # output_dir entries besides run_dir's
PPO_EPOCHS = "PPO epochs"  # the phase that epoch_seconds splits
HEADLINE = ("throughput_mbps", "fairness", "collision_rate", "invalid_action_rate",
            "leader_utility", "follower_utility")


UNSUPPORTED_LAUNCHES = {"ACCELERATE_USE_DEEPSPEED": "DeepSpeed", "ACCELERATE_USE_FSDP": "FSDP",
                        "ACCELERATE_USE_MEGATRON_LM": "Megatron-LM"}


def check_accelerate_launch(gradient_accumulation_steps: int) -> None:
    """Refuse what this trainer does not do under ``accelerate launch`` (ConfigError, one line):
    DeepSpeed, FSDP and Megatron-LM (the two adapters and value heads are updated by hand per
    role; only data parallelism over processes is supported), and gradient accumulation from the
    launcher besides the config's own (the loss would be divided twice)."""
    from textgame.config import ConfigError

    for variable, name in UNSUPPORTED_LAUNCHES.items():
        if os.environ.get(variable, "").lower() in ("true", "1"):
            raise ConfigError(f"accelerate launch with {name} ({variable}) is not supported by "
                              "StackelbergPPOTrainer; allowed: single-process or multi-process "
                              "data parallel launches (--multi_gpu, CPU processes)")
    launcher = os.environ.get("ACCELERATE_GRADIENT_ACCUMULATION_STEPS", "1").strip()
    if launcher not in ("", "1"):
        raise ConfigError(f"accelerate launch --gradient_accumulation_steps {launcher} is not "
                          "used by StackelbergPPOTrainer; allowed: 1 there, and "
                          "gradient_accumulation_steps in the config (now "
                          f"{gradient_accumulation_steps})")


class StackelbergPPOTrainer:
    """Trains a :class:`trainers.policy.models.StackelbergPolicy` on the text game (design §6)."""

    def __init__(self, model, processing_class, args: StackelbergPPOConfig | None = None,
                 accelerator: Accelerator | None = None, base_model_name: str = "") -> None:
        self.args = args = args or StackelbergPPOConfig()
        self.policy, self.tokenizer = model, processing_class
        self.base_model_name = base_model_name
        check_accelerate_launch(args.gradient_accumulation_steps)
        deterministic_algorithms(args.deterministic)
        self.accelerator = accelerator or Accelerator(
            mixed_precision=args.mixed_precision, log_with=args.report_to or None,
            project_dir=args.output_dir)
        self.output_dir = Path(args.output_dir)
        self.policy.to(self.accelerator.device)
        self.optimizers = {role: self.accelerator.prepare_optimizer(torch.optim.AdamW(
            self.policy.role_parameters(role), lr=args.learning_rate(role),
            weight_decay=args.weight_decay)) for role in ROLES}  # fp16: scaled, unscaled
        self.schedulers = {role: lr_scheduler(self.optimizers[role], args.lr_scheduler_type,
                                              args.total_epochs, args.warmup_steps())
                           for role in ROLES}
        render = chat_render(processing_class) if args.use_chat_template else None
        self.worker = RolloutWorker(self.policy, processing_class,
                                    PromptEncoder(processing_class), args, render,
                                    self.accelerator.process_index)
        self.rng = np.random.default_rng([args.seed, self.accelerator.process_index])
        self.epoch = 0
        self.history: list[dict] = []
        self._started = False  # output_dir checked, checkpoint loaded: once per trainer
        self.phase_seconds: dict[str, float] = {}  # this process's wall time per phase
        self.epoch_seconds: dict[str, float] = {}  # "PPO epochs" split: rollouts, updates
        self.eos = processing_class.eos_token_id
        self.pad = processing_class.pad_token_id if processing_class.pad_token_id is not None \
            else self.eos

    # --------------------------------------------------------------------------- training
    def train(self) -> list[dict]:
        """Run (or resume) the configured epochs; returns the per-epoch metrics."""
        args, acc = self.args, self.accelerator
        if not self._started:
            self._start()
        if args.report_to and not getattr(self, "_trackers", False):
            acc.init_trackers(TRACKER_PROJECT,
                              config={k: str(v) for k, v in vars(args).items()})
            self._trackers = True
        bar = tqdm(range(self.epoch, args.total_epochs), initial=self.epoch,
                   total=args.total_epochs, unit="epoch",
                   disable=args.disable_tqdm or not acc.is_main_process)
        for epoch in bar:
            with self._timed(PPO_EPOCHS):
                record = self.train_epoch(epoch)
            bar.set_postfix(leader=f"{record['leader_utility']:.3f}",
                            follower=f"{record['follower_utility']:.3f}")
            self.epoch = epoch + 1
            if args.eval_every and self.epoch % args.eval_every == 0:
                record.update({f"eval/{k}": v for k, v in self.evaluate().items()})
            self.log(record)
            if args.save_every and self.epoch % args.save_every == 0:
                self.save_checkpoint()
        if not args.save_every or self.epoch % args.save_every:
            self.save_checkpoint()
        if self.history and acc.is_main_process:
            from trainers.evaluation.report import plot_learning_curve

            plot_learning_curve(self.history, self.output_dir / LEARNING_CURVE)
        if args.report_to:
            acc.end_training()
        return self.history

    @contextlib.contextmanager
    def _timed(self, phase: str, into: dict[str, float] | None = None):
        """Adds the block's wall seconds to ``into[phase]``, by default ``phase_seconds``."""
        into = self.phase_seconds if into is None else into
        start = time.perf_counter()
        try:
            yield
        finally:
            into[phase] = into.get(phase, 0.0) + time.perf_counter() - start

    def _start(self) -> None:
        """Resume, or start fresh in an output_dir without a previous run (the policy of
        :func:`trainers.runs.run_dir.start_run`; every process decides, the main one deletes)."""
        args, acc = self.args, self.accelerator
        checkpoint = start_run(OWNER, self.output_dir, args.resume_from_checkpoint,
                               args.overwrite_output_dir, RUN_EXTRAS)
        acc.wait_for_everyone()
        if checkpoint is None and args.overwrite_output_dir and acc.is_main_process:
            clear_run(self.output_dir, RUN_EXTRAS)
        acc.wait_for_everyone()
        self._started = True
        if checkpoint is not None:
            self.load_checkpoint(checkpoint)
            return
        if args.init_adapters:
            self.policy.load_adapter_weights(download(args.init_adapters))
        elif args.expert_seeding:
            with self._timed("expert seeding"):
                self.seed_with_experts()
        if args.critic_warmup_episodes:
            with self._timed("critic warm-up"):
                self.warm_up_critic()
        if args.kl_reference == "start":
            self.policy.freeze_reference()

    def train_epoch(self, epoch: int) -> dict:
        """Algorithm 1 lines 5-21 for one epoch."""
        with self._timed("rollouts", self.epoch_seconds), \
                self.accelerator.autocast():  # the precision of the update: first ratio = 1
            leader, follower, kpis = self.worker.collect(epoch)
        record: dict = {"epoch": epoch + 1, "temperature": leader.temperature}
        record.update(self._mean_kpis(kpis))
        if self.policy.boundary:  # the frozen trunk's kept states (trainers.policy.trunk)
            record.update({f"trunk/{k}": v for k, v in self.policy.trunk.stats().items()})
        for role, decisions in (("leader", leader), ("follower", follower)):
            if role == "follower" and self.args.follower_policy != "llm":
                continue  # Dictator ablation: heuristic UEs, the follower adapter stays as is
            with self._timed(f"{role} updates", self.epoch_seconds):
                stats = ppo_update(self.policy, role, decisions, self.optimizers[role],
                                   self.args, self.accelerator, self.rng, self.eos, self.pad)
            record.update({f"{role}/{k}": v for k, v in self._mean_over_processes(stats).items()})
            record[f"{role}/learning_rate"] = self.schedulers[role].get_last_lr()[0]
            self.schedulers[role].step()
        return record

    def _mean_over_processes(self, stats: dict[str, float]) -> dict[str, float]:
        """Diagnostics averaged over processes (decisions summed)."""
        if self.accelerator.num_processes == 1:
            return stats
        names = sorted(stats)
        local = torch.tensor([stats[k] for k in names], dtype=torch.float64,
                             device=self.accelerator.device)
        mean = self.accelerator.reduce(local, reduction="mean")
        out = {k: float(v) for k, v in zip(names, mean, strict=True)}
        out["decisions"] *= self.accelerator.num_processes
        return out

    def _mean_kpis(self, kpis: list[dict]) -> dict[str, float]:
        """KPIs of this epoch's episodes, averaged over all processes."""
        summary = summarize(kpis)
        names = sorted(summary)
        local = torch.tensor([[summary[k].mean, summary[k].n] for k in names],
                             dtype=torch.float64, device=self.accelerator.device)
        local = torch.nan_to_num(local, nan=0.0)
        gathered = self.accelerator.gather(local[None]).reshape(-1, len(names), 2)
        weights = gathered[..., 1].clamp(min=1e-12)
        means = (gathered[..., 0] * gathered[..., 1]).sum(0) / weights.sum(0)
        return {k: float(v) for k, v in zip(names, means, strict=True)}

    # ------------------------------------------------------------------------- evaluation
    @torch.no_grad()
    def evaluate(self, episodes: int | None = None, epoch_key: int = 10**9,
                 records: list | None = None) -> dict[str, float]:
        """KPIs of fresh episodes at the final temperature, without learning (main metrics),
        averaged over processes. ``records`` (a list) receives every process's episodes:
        ``({"process", "batch"}, KPI arrays)`` per batch (textgame.metrics.episodes_csv)."""
        episodes = episodes or self.args.eval_episodes
        worker = self.worker
        kpis = []
        for batch in range(max(episodes // self.args.n_envs, 1)):
            with self.accelerator.autocast():
                _, _, episode_kpis = worker.play(epoch_key, batch, self.args.temperature_end)
            kpis.append(episode_kpis)
        if records is not None:
            mine = [(self.accelerator.process_index, kpis)]
            parts = gather_object(mine) if self.accelerator.num_processes > 1 else mine
            records += [({"process": process, "batch": batch}, result)
                        for process, batches in parts for batch, result in enumerate(batches)]
        return self._mean_kpis(kpis)

    # ----------------------------------------------------------------------------- seeding
    def seed_with_experts(self) -> dict:
        """SFT of both adapters on expert play (paper §IV), then their agreement with the
        experts on held-out episodes, printed (``expert_agreement_episodes = 0`` skips it); the
        seeded policy is saved to ``output_dir/seeded`` (a policy directory)."""
        from trainers.stackelberg.agreement import expert_agreement, format_agreement
        from trainers.stackelberg.seeding import seed_policy

        args = self.args
        metrics = seed_policy(self.policy.peft_model, self.tokenizer, args,
                              self.output_dir / EXPERT_SEEDING)
        self.policy.set_role("leader")
        if args.expert_agreement_episodes:
            metrics["agreement"] = expert_agreement(
                self.policy, self.tokenizer, args, episodes=args.expert_agreement_episodes,
                episode_ttis=args.expert_agreement_ttis or None)
            if self.accelerator.is_main_process:
                print(format_agreement(metrics["agreement"]), flush=True)
        self.save_model(self.output_dir / SEEDED)
        return metrics

    def warm_up_critic(self) -> dict[str, float]:
        """Value heads fitted to the starting policy's returns (:mod:`.critic`); the held-out
        explained variance before and after, printed and saved as ``critic-warmup.json``."""
        from trainers.stackelberg.critic import warm_up_critic

        with self.accelerator.autocast():
            metrics = warm_up_critic(self.policy, self.worker, self.args)
        if self.accelerator.is_main_process:
            save_json(self.output_dir / CRITIC_WARMUP, metrics)
            print("critic warm-up (explained variance on held-out episodes): " + ", ".join(
                f"{k} {v:.3f}" for k, v in metrics.items() if "explained" in k), flush=True)
        return metrics

    # ----------------------------------------------------------------------------- logging
    def log(self, record: dict) -> None:
        self.history.append(record)
        acc = self.accelerator
        if self.args.report_to:
            acc.log({k: v for k, v in record.items() if k != "epoch"}, step=record["epoch"])
        if not acc.is_main_process or record["epoch"] % self.args.log_every:
            return
        write_metrics(self.output_dir, self._logged(), "epoch", append=record)

    def _logged(self) -> list[dict]:
        return [r for r in self.history if r["epoch"] % self.args.log_every == 0]

    # ------------------------------------------------------------------------- checkpoints
    def checkpoints(self) -> list[Path]:
        return list_checkpoints(self.output_dir)

    def last_checkpoint(self) -> Path | None:
        """The newest complete checkpoint (incomplete ones are skipped with a warning)."""
        return latest_complete_checkpoint(self.output_dir)

    def save_checkpoint(self) -> Path:
        """``output_dir/checkpoint-<epoch>``, written to a temporary directory then renamed."""
        acc = self.accelerator
        acc.wait_for_everyone()
        if acc.is_main_process:
            tmp = begin_checkpoint(self.output_dir, self.epoch)
            self.policy.save_adapters(tmp)
            self.policy.save_reference(tmp)
            save_trainer_state(tmp, self.epoch, self.history, self.optimizers, self.schedulers)
        acc.wait_for_everyone()
        tmp = self.output_dir / f"{TMP_PREFIX}{CHECKPOINT_PREFIX}{self.epoch}"
        save_json(tmp / f"rng_state_{acc.process_index}.json",
                  rng_state({"shuffle": self.rng}))
        acc.wait_for_everyone()
        if acc.is_main_process:
            finish_checkpoint(tmp, self.args.save_total_limit)
        acc.wait_for_everyone()
        return self.output_dir / f"{CHECKPOINT_PREFIX}{self.epoch}"

    def load_checkpoint(self, path: str | os.PathLike) -> None:
        """Everything :meth:`save_checkpoint` wrote, without unpickling objects."""
        path = Path(path)
        self.policy.load_adapter_weights(path)
        if self.args.kl_reference == "start":
            self.policy.freeze_reference(path)
        state = load_trainer_state(path)
        self.epoch, self.history = state["epoch"], state["history"]
        for role in ROLES:
            self.optimizers[role].load_state_dict(state["optimizers"][role])
            self.schedulers[role].load_state_dict(state["schedulers"][role])
        set_rng_state(load_json(path / f"rng_state_{self.accelerator.process_index}.json"),
                      {"shuffle": self.rng})
        if self.accelerator.is_main_process:  # metrics after the checkpoint are replayed
            write_metrics(self.output_dir, self._logged(), "epoch")

    # ---------------------------------------------------------------------- final model
    def save_model(self, directory: str | os.PathLike | None = None) -> Path:
        directory = Path(directory or self.output_dir / "final")
        self.accelerator.wait_for_everyone()
        if self.accelerator.is_main_process:
            self.policy.save_adapters(directory)
            write_trainer_config(directory, self.args)
        self.accelerator.wait_for_everyone()
        return directory

    def push_to_hub(self, kpis: dict | None = None, token: str | None = None) -> str | None:
        from trainers.runs.hub import push_to_hub

        folder = self.save_model()
        if not self.accelerator.is_main_process:
            return None
        return push_to_hub(folder, self.args.hub_model_id, base_model=self.base_model_name,
                           config=self.args, kpis=kpis, token=token,
                           private=self.args.hub_private)
