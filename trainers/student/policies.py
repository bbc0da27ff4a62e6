"""The student as ``textgame.policies`` leader and follower, for any I (same N and K).

A *backend* turns features into actions: :class:`TorchBackend` runs the networks in PyTorch,
:class:`trainers.student.onnx.OnnxBackend` in onnxruntime; both are greedy and deterministic,
so one cell's decision is a pure function of the observation history.

    leader, follower = load_student("runs/student/final")            # PyTorch
    leader, follower = load_student("runs/student/final", "onnx")    # onnxruntime
    run_episodes(scenario, leader, follower, episodes=128)
"""

from __future__ import annotations

import os
from typing import Literal

import numpy as np
import torch

from textgame.game import FollowerObs, LeaderObs
from textgame.policies import FollowerPolicy, LeaderPolicy
from trainers.student.features import StudentFollowerFeatures, StudentLeaderFeatures
from trainers.student.model import StudentModel

RUNTIMES = ("torch", "onnx")


class TorchBackend:
    """Greedy decisions of a :class:`StudentModel` in PyTorch (no autograd)."""

    def __init__(self, model: StudentModel) -> None:
        self.model = model.eval()

    @torch.inference_mode()
    def leader(self, global_x: np.ndarray, ue_x: np.ndarray, mask: np.ndarray) -> np.ndarray:
        dcm, _ = self.model.leader(torch.from_numpy(global_x), torch.from_numpy(ue_x),
                                   torch.from_numpy(mask))
        return dcm.numpy()  # (B, N)

    @torch.inference_mode()
    def follower(self, ue_x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        bitmap, ucm, _, _ = self.model.follower(torch.from_numpy(ue_x))
        return bitmap.numpy(), ucm.numpy()  # (B, I_max, N), (B, I_max)


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

    def act(self, obs: LeaderObs) -> np.ndarray:
        global_x, ue_x, mask = self.features.push(obs)  # (B, Dg), (B, W, Db), (B, W)
        dcm = self.backend.leader(global_x, ue_x, mask).astype(np.int64)  # (B, N)
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

    def act(self, obs: FollowerObs) -> tuple[np.ndarray, np.ndarray]:
        ue_x = self.features.push(obs)  # (B, I_max, Du)
        bitmap, ucm = self.backend.follower(ue_x)
        self.last = {"ue_x": ue_x}
        active = obs.active
        return bitmap & active[..., None], np.where(active, ucm, 0).astype(np.int64)


def load_student(path: str | os.PathLike, runtime: Literal["torch", "onnx"] = "torch"
                 ) -> tuple[StudentLeader, StudentFollower]:
    """(leader, follower) from a student directory; ``runtime`` 'onnx' runs its ``*.onnx``
    files in onnxruntime (exported by :func:`trainers.student.onnx.export_onnx`)."""
    if runtime not in RUNTIMES:
        raise ValueError(f"runtime = {runtime!r} is invalid; allowed: {list(RUNTIMES)}")
    model = StudentModel.load(path)
    if runtime == "onnx":
        from trainers.student.onnx import OnnxBackend

        backend = OnnxBackend(path)
    else:
        backend = TorchBackend(model)
    return StudentLeader(model, backend), StudentFollower(model, backend)
