"""The student as ``textgame.policies`` leader and follower, for any I (same N and K).

A *backend* turns features into actions: :class:`TorchBackend` runs the networks in PyTorch,
:class:`trainers.student.onnx.OnnxBackend` in onnxruntime. Its ``decoding`` is 'greedy' (each
head's mode, so one cell's decision is a pure function of the observation history) or 'sample'
(PyTorch only: the DCM drawn from the leader's Plackett-Luce distribution, bitmap bits
Bernoulli(sigmoid(logit)), the UCM categorical), with a ``torch.Generator`` each policy seeds
from the runner's rng in ``reset``. Behaviour cloning learns pi(a|s): a stochastic teacher
(an LLM's PAG sampling) is imitated by sampling, since the mode of UEs that send on a grant
with probability < 0.5 never sends.

    leader, follower = load_student("runs/student/final")            # its saved decoding
    leader, follower = load_student("runs/student/final", "onnx")    # onnxruntime (greedy)
    run_episodes(scenario, leader, follower, episodes=128)
"""

from __future__ import annotations

import os
from typing import Literal

import numpy as np
import torch

from textgame.game import FollowerObs, LeaderObs
from textgame.policies import FollowerPolicy, LeaderPolicy
from trainers.marl.networks import sample_bernoulli, sample_categorical
from trainers.marl.policies import torch_generator
from trainers.student.features import StudentFollowerFeatures, StudentLeaderFeatures
from trainers.student.model import StudentModel, check_decoding

RUNTIMES = ("torch", "onnx")


class TorchBackend:
    """Decisions of a :class:`StudentModel` in PyTorch (no autograd) by ``decoding``
    (default: the model's); 'sample' draws from the ``generator`` the policy passes."""

    def __init__(self, model: StudentModel, decoding: str | None = None) -> None:
        self.model = model.eval()
        self.decoding = check_decoding(model.decoding if decoding is None else decoding)

    @torch.inference_mode()
    def leader(self, global_x: np.ndarray, ue_x: np.ndarray, mask: np.ndarray,
               generator: torch.Generator | None = None) -> np.ndarray:
        args = (torch.from_numpy(global_x), torch.from_numpy(ue_x), torch.from_numpy(mask))
        if self.decoding == "sample":
            dcm, _ = self.model.leader.sample(*args, generator)
        else:
            dcm, _ = self.model.leader(*args)  # the Plackett-Luce mode: one TopK
        return dcm.numpy()  # (B, N)

    @torch.inference_mode()
    def follower(self, ue_x: np.ndarray, generator: torch.Generator | None = None
                 ) -> tuple[np.ndarray, np.ndarray]:
        bitmap_logits, ucm_logits = self.model.follower.logits(torch.from_numpy(ue_x))
        greedy = self.decoding == "greedy"
        bitmap = sample_bernoulli(bitmap_logits, generator, greedy)  # (B, I_max, N)
        ucm = sample_categorical(ucm_logits, generator, greedy)  # (B, I_max)
        return bitmap.numpy(), ucm.numpy()


def _generator(backend, rng: np.random.Generator | None) -> torch.Generator | None:
    """A sampling backend's generator, seeded from ``rng``; a greedy one draws nothing (so
    it leaves the rng, shared with other policies, untouched)."""
    return torch_generator(rng) if backend.decoding == "sample" else None


def _check_cell(model: StudentModel, n_rbgs: int, ucm_levels: int | None = None) -> None:
    shape = model.shape
    if n_rbgs != shape.n_rbgs:
        raise ValueError(f"n_rbgs = {n_rbgs} is invalid for this student; allowed: "
                         f"{shape.n_rbgs} (the N it was distilled with)")
    if ucm_levels is not None and ucm_levels != shape.ucm_levels:
        raise ValueError(f"ucm_levels = {ucm_levels} is invalid for this student; allowed: "
                         f"{shape.ucm_levels} (the K it was distilled with)")


class StudentLeader(LeaderPolicy):
    """The BS student: features of :class:`StudentLeaderFeatures`, then the backend's DCM."""

    name = "student_leader"

    def __init__(self, model: StudentModel, backend=None) -> None:
        self.model, self.backend = model, backend or TorchBackend(model)

    def reset(self, n_envs, max_ues, n_rbgs, rng) -> None:
        _check_cell(self.model, n_rbgs)
        super().reset(n_envs, max_ues, n_rbgs, rng)
        self.features = StudentLeaderFeatures(self.model.shape, self.model.history_len)
        self.features.reset(n_envs, max_ues)
        self.generator = _generator(self.backend, rng)

    def act(self, obs: LeaderObs) -> np.ndarray:
        global_x, ue_x, mask = self.features.push(obs)  # (B, Dg), (B, W, Db), (B, W)
        dcm = self.backend.leader(global_x, ue_x, mask, self.generator).astype(np.int64)
        self.features.record(dcm, obs.active)
        self.last = {"global_x": global_x, "ue_x": ue_x, "mask": mask, "dcm": dcm}
        return dcm

    def executed(self, dcm: np.ndarray, active: np.ndarray) -> None:
        """The DCM that was actually sent, when another policy overrode this one (DAgger)."""
        self.features.record(dcm, active)


class StudentFollower(FollowerPolicy):
    """The shared UE student applied to every UE slot; inactive slots send nothing."""

    name = "student_follower"

    def __init__(self, model: StudentModel, backend=None) -> None:
        self.model, self.backend = model, backend or TorchBackend(model)

    def reset(self, n_envs, max_ues, n_rbgs, ucm_levels, rng) -> None:
        _check_cell(self.model, n_rbgs, ucm_levels)
        super().reset(n_envs, max_ues, n_rbgs, ucm_levels, rng)
        self.features = StudentFollowerFeatures(self.model.shape, self.model.history_len)
        self.features.reset(n_envs, max_ues)
        self.generator = _generator(self.backend, rng)

    def act(self, obs: FollowerObs) -> tuple[np.ndarray, np.ndarray]:
        ue_x = self.features.push(obs)  # (B, I_max, Du)
        bitmap, ucm = self.backend.follower(ue_x, self.generator)  # (B, I_max, N), (B, I_max)
        self.last = {"ue_x": ue_x}
        active = obs.active
        return bitmap & active[..., None], np.where(active, ucm, 0).astype(np.int64)


def load_student(path: str | os.PathLike, runtime: Literal["torch", "onnx"] = "torch",
                 decoding: Literal["greedy", "sample"] | None = None
                 ) -> tuple[StudentLeader, StudentFollower]:
    """(leader, follower) from a student directory, acting by ``decoding`` (default: the one
    saved with it); ``runtime`` 'onnx' runs its ``*.onnx`` files in onnxruntime (exported by
    :func:`trainers.student.onnx.export_onnx`), greedy only: sampling runs in PyTorch."""
    if runtime not in RUNTIMES:
        raise ValueError(f"runtime = {runtime!r} is invalid; allowed: {list(RUNTIMES)}")
    model = StudentModel.load(path)
    decoding = check_decoding(model.decoding if decoding is None else decoding)
    if runtime == "onnx":
        if decoding != "greedy":
            raise ValueError(f"decoding = {decoding!r} is invalid with runtime 'onnx'; allowed: "
                             "'greedy' (sampling runs in PyTorch: use runtime 'torch')")
        from trainers.student.onnx import OnnxBackend

        backend = OnnxBackend(path)
    else:
        backend = TorchBackend(model, decoding)
    return StudentLeader(model, backend), StudentFollower(model, backend)
