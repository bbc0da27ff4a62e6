"""Distillation of any teacher into the students: behaviour cloning, then DAgger (App. C-C).

Round 0 plays ``bc_episodes`` with the teacher acting; DAgger round r plays ``dagger_episodes``
in which each env's TTI is executed by the teacher with probability beta^r and by the student
otherwise, acting by its decoding (``DistillConfig.student_decoding``: greedy, or sampled for a
stochastic teacher). Every visited state is labelled with the teacher's action and appended to
the aggregate; then the students fit the aggregate for ``epochs_per_round`` passes (leader:
Plackett-Luce likelihood of the teacher's DCM with teacher forcing; follower: Bernoulli
bitmap and categorical UCM likelihoods).

Rounds are seeded by (seed, round), so a checkpoint at a round boundary (weights, optimizer,
the aggregate, history) is all the state there is; it is written atomically (temp dir +
``os.replace``). ``metrics.jsonl``/``metrics.csv`` (and the trackers of ``report_to``) get one
record per round.

    python -m trainers.student --teacher max_weight/dictator --output_dir runs/student
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from textgame.config import ScenarioConfig
from textgame.metrics import episodes_csv
from trainers.ppo import cosine_with_warmup
from trainers.runs.run_dir import (
    EPISODES_CSV,
    TRACKER_PROJECT,
    Trackers,
    begin_checkpoint,
    finish_checkpoint,
    finite,
    load_json,
    load_state,
    open_run,
    save_json,
    write_metrics,
)
from trainers.student.config import OWNER, DistillConfig
from trainers.student.features import CellShape
from trainers.student.model import WEIGHTS_FILE, StudentModel
from trainers.student.rollout import collect, pad_ues
from trainers.student.teachers import Teacher, build_teacher

DATA_FILE, STATE_FILE, HISTORY_FILE = "dataset.safetensors", "optimizer.pt", "history.json"


def training_scenario(config: DistillConfig, teacher: Teacher) -> ScenarioConfig:
    """The config's cell with D(I) uniform on ``ue_counts``, or by default on the teacher's
    training sizes (a heuristic's: the cell's D(I)) and ``eval_ues``."""
    data = ScenarioConfig.from_dict(config.scenario).to_dict()
    counts = config.ue_counts or sorted(
        set(teacher.ue_counts or data["cell"]["ue_counts"]) | set(config.eval_ues))
    data["cell"].update(ue_counts=list(counts), ue_probs=None, max_ues=None)
    return ScenarioConfig.from_dict(data)


class Distiller:
    """BC + DAgger of ``config.teacher`` into a fresh :class:`StudentModel`."""

    def __init__(self, config: DistillConfig, teacher: Teacher | None = None) -> None:
        self.config = c = config
        cell = ScenarioConfig.from_dict(c.scenario).cell
        self.teacher = teacher or build_teacher(c.teacher, cell, c.teacher_greedy,
                                                c.base_model, c.device)
        self.scenario = training_scenario(c, self.teacher)
        with torch.random.fork_rng():  # initialisation seeded without touching global state
            torch.manual_seed(c.seed)
            self.student = StudentModel(CellShape.of(self.scenario.cell), c.history_len,
                                        c.leader_hidden, c.follower_hidden, c.teacher,
                                        c.decoding)
        self.optimizer = torch.optim.AdamW(self.student.parameters(), lr=c.learning_rate,
                                           weight_decay=c.weight_decay)
        self.output_dir = Path(c.output_dir)
        self.round, self.history = 0, []
        self.data: dict[str, torch.Tensor] = {}
        self.trackers = Trackers((), self.output_dir, {})  # report_to's, while training
        self._started = False

    # --------------------------------------------------------------------------- training
    def train(self, stop_at: int | None = None) -> list[dict]:
        """Run (or resume) every round, or stop after round ``stop_at`` (as if interrupted)."""
        c = self.config
        if not self._started:  # output_dir checked, checkpoint loaded: once per distiller
            checkpoint = open_run(OWNER, self.output_dir, c.resume_from_checkpoint,
                                  c.overwrite_output_dir, (TRACKER_PROJECT,))
            if checkpoint is not None:
                self.load_checkpoint(checkpoint)
            self._started = True
        end = c.total_rounds if stop_at is None else min(stop_at, c.total_rounds)
        self.trackers = Trackers(c.report_to, self.output_dir, vars(c))
        bar = tqdm(range(self.round, end), initial=self.round, total=c.total_rounds,
                   unit="round", desc="distill", disable=c.disable_tqdm)
        for round_ in bar:
            record = self.train_round(round_)
            bar.set_postfix(agreement=f"{record['rbg_agreement']:.3f}",
                            loss=f"{record['leader_loss']:.3f}")
            self.round = round_ + 1
            self.history.append(record)
            self.trackers.log(record, "round")
            write_metrics(self.output_dir, self.history, "round", append=record)
            self.save_checkpoint()
        self.trackers.finish()
        return self.history

    def train_round(self, round_: int) -> dict:
        """Roll out (teacher or beta-mixture), label, aggregate, fit."""
        c = self.config
        start = time.perf_counter()
        beta = 1.0 if round_ == 0 else c.dagger_beta ** round_
        episodes = c.bc_episodes if round_ == 0 else c.dagger_episodes
        self.student.eval()
        leader, follower, stats = collect(self.student, self.teacher, self.scenario, episodes,
                                          c.n_envs, np.random.SeedSequence([c.seed, round_]),
                                          beta)
        self.aggregate(leader, follower)
        lr = c.learning_rate * cosine_with_warmup(round_, c.total_rounds)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        losses = self.fit(round_)
        return {"round": round_, "beta": beta, "episodes": episodes, **stats, **losses,
                "leader_decisions": len(self.data["dcm"]),
                "follower_decisions": len(self.data["ucm"]), "learning_rate": lr,
                "seconds": time.perf_counter() - start}

    def aggregate(self, leader: dict, follower: dict) -> None:
        new = {**leader, **follower}
        if not self.data:
            self.data = new
            return
        width = max(self.data["ue_x"].shape[1], new["ue_x"].shape[1])
        for part in (self.data, new):  # leader rows padded to the widest I seen
            part["ue_x"], part["mask"] = pad_ues(part["ue_x"], part["mask"], width)
        self.data = {k: torch.cat([self.data[k], new[k]]) for k in self.data}

    def fit(self, round_: int) -> dict:
        """``epochs_per_round`` passes; leader and follower minibatches advance together."""
        c, d, student = self.config, self.data, self.student
        student.train()
        order = torch.Generator().manual_seed(int(np.random.SeedSequence(
            [c.seed, round_, 1]).generate_state(1)[0]))
        n_lead, n_follow = len(d["dcm"]), len(d["ucm"])
        steps = max(1, math.ceil(n_lead / c.minibatch_size))
        sums = {"leader_loss": 0.0, "follower_loss": 0.0}
        for _ in range(c.epochs_per_round):
            lead = torch.randperm(n_lead, generator=order).chunk(steps)
            follow = torch.randperm(n_follow, generator=order).chunk(steps)
            for li, fi in zip(lead, follow, strict=False):
                leader_loss = self.leader_loss(li)
                follower_loss = self.follower_loss(fi)
                self.optimizer.zero_grad()
                (leader_loss + follower_loss).backward()
                for net in (student.leader, student.follower):
                    torch.nn.utils.clip_grad_norm_(net.parameters(), c.max_grad_norm)
                self.optimizer.step()
                sums["leader_loss"] += leader_loss.item() / (steps * c.epochs_per_round)
                sums["follower_loss"] += follower_loss.item() / (steps * c.epochs_per_round)
        student.eval()
        return sums

    def leader_loss(self, idx: torch.Tensor) -> torch.Tensor:
        """Mean over RBGs of -log P(teacher's owner of RBG n | the grants of RBGs < n), each
        RBG weighted by its owner's class weight (``nobody_weight`` for owner 0, else 1)."""
        d = self.data
        mask = d["mask"][idx]
        width = max(int(mask.sum(1).max()), 1)  # drop all-padding columns
        dcm = d["dcm"][idx]  # (M, N)
        logits = self.student.leader.teacher_forced(
            d["global_x"][idx], d["ue_x"][idx, :width], mask[:, :width], dcm)  # (M, N, 1 + W)
        weight = logits.new_ones(logits.shape[-1])  # (1 + W,)
        weight[0] = self.config.nobody_weight
        return F.cross_entropy(logits.flatten(0, 1), dcm.flatten(), weight=weight)

    def follower_loss(self, idx: torch.Tensor) -> torch.Tensor:
        d = self.data
        bitmap_logits, ucm_logits = self.student.follower.logits(d["follower_x"][idx])
        return (F.binary_cross_entropy_with_logits(bitmap_logits, d["bitmap"][idx])
                * self.student.shape.n_rbgs + F.cross_entropy(ucm_logits, d["ucm"][idx]))

    # ------------------------------------------------------------------------- checkpoints
    def save_checkpoint(self) -> Path:
        """``output_dir/checkpoint-<round>``: a loadable student plus the distiller's state,
        written atomically with a manifest (:mod:`trainers.runs.run_dir`)."""
        tmp = begin_checkpoint(self.output_dir, self.round)
        self.student.save(tmp)
        save_file({k: v.contiguous() for k, v in self.data.items()}, str(tmp / DATA_FILE))
        torch.save(self.optimizer.state_dict(), tmp / STATE_FILE)
        save_json(tmp / HISTORY_FILE, {"round": self.round,
                                       "history": [finite(r) for r in self.history]})
        return finish_checkpoint(tmp, self.config.save_total_limit)

    def load_checkpoint(self, path: str | os.PathLike) -> None:
        path = Path(path)
        self.student.load_state_dict(load_file(str(path / WEIGHTS_FILE)))
        self.data = load_file(str(path / DATA_FILE))
        self.optimizer.load_state_dict(load_state(path / STATE_FILE))
        state = load_json(path / HISTORY_FILE)
        self.round, self.history = state["round"], state["history"]
        write_metrics(self.output_dir, self.history, "round")  # rounds after it are replayed

    def save_model(self, directory: str | os.PathLike | None = None) -> Path:
        """The final student (``final/``), with its ONNX files when ``export_onnx``."""
        directory = self.student.save(directory or self.output_dir / "final")
        if self.config.export_onnx:
            from trainers.student.onnx import export_onnx

            export_onnx(self.student, directory)
        return directory


def distill(config: DistillConfig, teacher: Teacher | None = None) -> dict:
    """Distil, save ``final/`` (weights, ONNX) and measure retention at ``eval_ues``; with
    ``baseline='ppo'`` also train the undistilled baseline for the same wall time.

    Returns ``{"final": path, "history": [...], "retention": [row per I], "seconds": ...}``
    (plus ``"baseline"``: :func:`trainers.student.ppo_baseline.train_from_scratch`'s result);
    the retention rows also go to ``output_dir/retention.json`` and ``retention.md``, every
    episode behind them (I, player, seed) to ``output_dir/episodes.csv``.
    """
    from trainers.student.policies import load_student
    from trainers.student.retention import markdown, retention_table

    start = time.perf_counter()
    distiller = Distiller(config, teacher)
    history = distiller.train()
    final = distiller.save_model()
    seconds = time.perf_counter() - start
    result = {"final": final, "history": history, "seconds": seconds}
    baseline = None
    if config.baseline == "ppo":
        result["baseline"] = train_baseline(config, distiller.scenario,
                                            config.baseline_seconds or seconds)
        baseline = load_student(result["baseline"]["final"])
    student = load_student(final, config.eval_runtime)
    teacher = distiller.teacher
    records: list = []
    rows = retention_table(distiller.scenario, student, (teacher.leader, teacher.follower),
                           config.eval_ues, config.eval_episodes, config.seed + 1, baseline,
                           records)
    out = distiller.output_dir
    (out / EPISODES_CSV).write_text(episodes_csv(records))
    (out / "retention.json").write_text(json.dumps([finite(r) for r in rows], indent=2))
    (out / "retention.md").write_text(markdown(rows))
    return {**result, "retention": rows}


def train_baseline(config: DistillConfig, scenario: ScenarioConfig, seconds: float) -> dict:
    """The same student architecture trained from scratch by PPO for ``seconds`` (Fig. 14)."""
    from trainers.student.ppo_baseline import PPOBaselineConfig, train_from_scratch

    ppo = PPOBaselineConfig(history_len=config.history_len, leader_hidden=config.leader_hidden,
                            follower_hidden=config.follower_hidden, n_envs=config.n_envs,
                            seed=config.seed)
    return train_from_scratch(ppo, scenario, seconds, Path(config.output_dir) / "baseline-ppo")
