"""The student's per-TTI path for one cell on one core (B = 1): the deployed MAC's hot loop.

:class:`RealtimeStudent` computes the same features as :class:`StudentLeaderFeatures` and
:class:`StudentFollowerFeatures` (hence the same actions as ``StudentLeader``/``StudentFollower``
at B = 1; tested bit for bit) without their batch machinery: every frame is written into a
preallocated buffer by slice assignment, one-hots are rows of precomputed identity tables, the
history shift is one in-place copy and the rank gather one boolean index. The networks run in
onnxruntime (:mod:`trainers.student.onnx`; PyTorch with ``runtime='torch'``).

    student = RealtimeStudent.load("runs/student/final")
    dcm = student.leader(leader_obs)                   # (N,) entries in 0..I_t
    bitmap, ucm = student.followers(follower_obs)      # (I_max, N) bool, (I_max,)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import numpy as np

from textgame.game import FollowerObs, LeaderObs
from textgame.simulator import COLLISION, ERASURE, SUCCESS
from trainers.marl.features import N_CSI, N_OUTCOMES, bs_ue_frame_dim, follower_frame_dim
from trainers.student.features import POSITION_SCALE
from trainers.student.model import StudentModel
from trainers.student.policies import TorchBackend


def _shift(stack: np.ndarray) -> None:
    """Newest frame first: every frame moves one slot back in place (row 0 is rewritten)."""
    stack[..., 1:, :] = stack[..., :-1, :].copy()


class RealtimeStudent:
    """Greedy decisions of one cell with up to ``max_ues`` UE slots, one TTI at a time."""

    def __init__(self, model: StudentModel, backend, max_ues: int) -> None:
        self.model, self.backend, self.max_ues = model, backend, max_ues
        s, h = model.shape, model.history_len
        self.shape, self.history_len = s, h
        n, k = s.n_rbgs, s.ucm_levels
        self.eye = {size: np.eye(size, dtype=np.float32) for size in {N_OUTCOMES, N_CSI, k}}
        self.log_capacity = np.log1p(s.buffer_dpdus)  # as trainers.marl.features._buffer_status
        self.global_stack = np.zeros((h, N_OUTCOMES * n + 1), dtype=np.float32)
        self.bs_stack = np.zeros((max_ues, h, bs_ue_frame_dim(n, k)), dtype=np.float32)
        self.ue_stack = np.zeros((max_ues, h, follower_frame_dim(n, k)), dtype=np.float32)
        self.reset()

    @classmethod
    def load(cls, path: str | os.PathLike, max_ues: int = 16,
             runtime: Literal["onnx", "torch"] = "onnx", threads: int = 1) -> RealtimeStudent:
        model = StudentModel.load(path)
        if runtime == "onnx":
            from trainers.student.onnx import OnnxBackend

            return cls(model, OnnxBackend(Path(path), threads), max_ues)
        return cls(model, TorchBackend(model, "greedy"), max_ues)

    def reset(self) -> None:
        """A new episode: empty histories, no grants, no UE seen before."""
        for stack in (self.global_stack, self.bs_stack, self.ue_stack):
            stack[:] = 0.0
        self.grants = np.zeros((self.max_ues, self.shape.n_rbgs), dtype=bool)
        self.bs_was_active = np.zeros(self.max_ues, dtype=bool)
        self.ue_was_active = np.zeros(self.max_ues, dtype=bool)

    # --------------------------------------------------------------------------- leader
    def leader_inputs(self, obs: LeaderObs) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """global (1, Dg), per-UE (1, W, Db) in rank order, mask (1, W): W = max(I_t, 1)."""
        s, n = self.shape, self.shape.n_rbgs
        active = obs.active[0]  # (I_max,)
        g = self.global_stack
        _shift(g)
        outcome = np.minimum(np.maximum(obs.rbg_outcome[0], 0), N_OUTCOMES - 1)
        g[0, :-1] = self.eye[N_OUTCOMES][outcome].reshape(-1)
        g[0, -1] = obs.t / s.episode_ttis

        q = obs.queue_report[0].astype(np.float32)
        served = obs.served_rbgs[0].astype(np.float32)
        frame = self.bs_stack[:, 0]  # (I_max, Fb), written after the shift below
        fresh = active & ~self.bs_was_active
        _shift(self.bs_stack)
        self.bs_stack[fresh] = 0.0
        frame[:, 0] = active
        frame[:, 1] = q > 0
        frame[:, 2] = (np.log1p(q) / self.log_capacity).astype(np.float32)
        frame[:, 3:6] = self.eye[N_CSI][np.minimum(np.maximum(obs.csi[0], 0), N_CSI - 1)]
        k = s.ucm_levels
        frame[:, 6:6 + k] = self.eye[k][np.minimum(np.maximum(obs.ucm[0], 0), k - 1)]
        frame[:, 6 + k] = served / (n * (obs.t + 1))
        frame[:, 7 + k] = served / np.maximum(served.sum(keepdims=True), 1.0)
        frame[:, 8 + k:] = self.grants
        frame *= active[:, None]
        self.bs_was_active = active.copy()

        se = np.asarray(obs.spectral_efficiency)[obs.csi[0]]  # (I_max,), aged CSI
        capacity = np.floor(s.rbg_resource_elements * se) / s.dpdu_bits  # eq. 1, in dPDUs
        rank = np.cumsum(active)
        current = np.stack([obs.queue_report[0], capacity, (rank - 1) / POSITION_SCALE], -1)
        n_active = int(obs.n_active[0])
        width = max(n_active, 1)
        ue_x = np.zeros((1, width, 3 + self.bs_stack.shape[1] * self.bs_stack.shape[2]),
                        dtype=np.float32)
        ue_x[0, :n_active, :3] = current[active]
        ue_x[0, :n_active, 3:] = self.bs_stack[active].reshape(n_active, -1)
        mask = np.zeros((1, width), dtype=bool)
        mask[0, :n_active] = True
        global_x = np.empty((1, 1 + g.size), dtype=np.float32)
        global_x[0, 0] = n_active / POSITION_SCALE
        global_x[0, 1:] = g.reshape(-1)
        return global_x, ue_x, mask

    def leader(self, obs: LeaderObs) -> np.ndarray:
        """The DCM (N,) int64 of this TTI (and the BS remembers it as its grants)."""
        self.last = self.leader_inputs(obs)  # (global_x, ue_x, mask)
        dcm = self.backend.leader(*self.last)[0].astype(np.int64)
        active = obs.active[0]
        rank = np.cumsum(active) * active  # 0 = inactive
        self.grants = (dcm[None, :] == rank[:, None]) & active[:, None]
        return dcm

    # ------------------------------------------------------------------------ followers
    def follower_inputs(self, obs: FollowerObs) -> np.ndarray:
        """(1, I_max, Du): every UE slot's history stack."""
        s = self.shape
        n, k = s.n_rbgs, s.ucm_levels
        active = obs.active[0]
        b = obs.buffer_dpdus[0].astype(np.float32)
        fb = obs.feedback[0]  # (I_max, N)
        fresh = active & ~self.ue_was_active
        _shift(self.ue_stack)
        self.ue_stack[fresh] = 0.0
        frame = self.ue_stack[:, 0]
        frame[:, 0] = active
        frame[:, 1] = b > 0
        frame[:, 2] = (np.log1p(b) / self.log_capacity).astype(np.float32)
        frame[:, 3:6] = self.eye[N_CSI][np.minimum(np.maximum(obs.channel[0], 0), N_CSI - 1)]
        frame[:, 6:6 + n] = obs.dcm_bits[0]
        for j, outcome in enumerate((SUCCESS, COLLISION, ERASURE)):
            frame[:, 6 + (j + 1) * n:6 + (j + 2) * n] = fb == outcome
        frame[:, 6 + 4 * n:6 + 5 * n] = fb != 0
        frame[:, 6 + 5 * n:] = self.eye[k][np.minimum(np.maximum(obs.last_ucm[0], 0), k - 1)]
        frame *= active[:, None]
        self.ue_was_active = active.copy()
        return self.ue_stack.reshape(1, self.max_ues, -1)

    def followers(self, obs: FollowerObs) -> tuple[np.ndarray, np.ndarray]:
        """Bitmaps (I_max, N) bool and UCMs (I_max,) int64; inactive slots send nothing."""
        bitmap, ucm = self.backend.follower(self.follower_inputs(obs))
        active = obs.active[0]
        return bitmap[0] & active[:, None], np.where(active, ucm[0], 0).astype(np.int64)

