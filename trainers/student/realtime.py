"""The student's per-TTI path for one cell on one core (B = 1): the deployed MAC's hot loop.

:class:`RealtimeStudent` computes the same features as :class:`StudentLeaderFeatures` and
:class:`StudentFollowerFeatures` (hence the same actions as ``StudentLeader``/``StudentFollower``
at B = 1; tested bit for bit) without their batch machinery: every column group of the newest
frames is a view made once, so a TTI writes each group with one slice assignment; one-hots are
rows of precomputed tables (CSI and UCM together in one lookup), the history shift is one
in-place copy, eq. 1's capacities are a per-CSI table and the rank gather is one boolean index
of the leader's per-UE rows. The networks run in onnxruntime (:mod:`trainers.student.onnx`;
PyTorch with ``runtime='torch'``). ``benchmarks/bench_student.py`` times it.
:func:`load_realtime` serves the compiled one-call TTI of :mod:`trainers.student.compiled` when
numba is installed (the ``[realtime]`` extra), this class on onnxruntime otherwise.

    student = load_realtime("runs/student/final")     # or RealtimeStudent.load(...)
    dcm = student.leader(leader_obs)                   # (N,) entries in 0..I_t
    bitmap, ucm = student.followers(follower_obs)      # (I_max, N) bool, (I_max,)
"""

from __future__ import annotations

import importlib.util
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

from textgame.game import FollowerObs, LeaderObs
from textgame.simulator import COLLISION, ERASURE, SUCCESS
from trainers.marl.features import N_CSI, N_OUTCOMES, bs_ue_frame_dim, follower_frame_dim
from trainers.student.features import POSITION_SCALE, RAW_COLUMNS
from trainers.student.model import StudentModel
from trainers.student.policies import TorchBackend

if TYPE_CHECKING:
    from trainers.student.compiled import CompiledStudent

logger = logging.getLogger(__name__)


def _shift(stack: np.ndarray) -> None:
    """Newest frame first: every frame moves one slot back in place (numpy buffers the
    overlapping copy; slot 0 is rewritten next)."""
    stack[..., 1:, :] = stack[..., :-1, :]


def _view(array: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """``array`` reshaped *without a copy* (writes through it land in the buffer)."""
    view = array.reshape(shape)
    assert np.shares_memory(view, array), "a frame column group must be a view"
    return view


class RealtimeStudent:
    """Greedy decisions of one cell with up to ``max_ues`` UE slots, one TTI at a time.

    Buffers (allocated once): the leader's per-UE rows ``[queue, capacity, position,
    *history]`` (I_max, Db) whose history part is the BS's stack (I_max, H, Fb); the leader's
    global row ``[I_t / 8, *history]`` (1, Dg); the UEs' stacks (I_max, H, Fu). Every column
    group of the newest frame is a view made here, so a TTI is a few slice assignments, one
    gather of the active rows and the two network runs. Observations must be valid (CSI in
    0..2, UCMs in 0..K-1, as the game produces them): nothing is clipped.
    """

    def __init__(self, model: StudentModel, backend, max_ues: int) -> None:
        self.model, self.backend, self.max_ues = model, backend, max_ues
        s, h = model.shape, model.history_len
        self.shape, self.history_len = s, h
        n, k = s.n_rbgs, s.ucm_levels
        self.log_capacity = np.log1p(s.buffer_dpdus)  # as trainers.marl.features._buffer_status
        self.outcome_table = np.eye(N_OUTCOMES, dtype=np.float32)  # row o: one-hot of o
        # row q * K + u: one-hot of CSI q, then one-hot of UCM u (the frame's columns 3..6+K)
        self.csi_ucm_table = np.concatenate(
            [np.repeat(np.eye(N_CSI, dtype=np.float32), k, 0),
             np.tile(np.eye(k, dtype=np.float32), (N_CSI, 1))], 1)
        self.csi_table = np.eye(N_CSI, dtype=np.float32)
        self.ucm_table = np.eye(k, dtype=np.float32)
        self.positions = (np.arange(max_ues) / POSITION_SCALE).astype(np.float32)
        self.feedback_codes = np.array([SUCCESS, COLLISION, ERASURE])[:, None]  # (3, 1)
        fb_dim, fu_dim = bs_ue_frame_dim(n, k), follower_frame_dim(n, k)
        # leader: global row and per-UE rows, their history stacks are views into them
        self.global_x = np.zeros((1, 1 + h * (N_OUTCOMES * n + 1)), dtype=np.float32)
        self.global_stack = _view(self.global_x[0, 1:], (h, N_OUTCOMES * n + 1))
        self.outcome_columns = _view(self.global_stack[0, :-1], (n, N_OUTCOMES))
        self.ue_rows = np.zeros((max_ues, RAW_COLUMNS + 1 + h * fb_dim), dtype=np.float32)
        self.bs_stack = _view(self.ue_rows[:, RAW_COLUMNS + 1:], (max_ues, h, fb_dim))
        self.bs_frame = self.bs_stack[:, 0]  # (I_max, Fb), the newest frame
        # followers: the UE stacks and the newest frame's feedback columns as (I_max, 3, N)
        self.ue_stack = np.zeros((max_ues, h, fu_dim), dtype=np.float32)
        self.ue_frame = self.ue_stack[:, 0]
        self.feedback_columns = _view(self.ue_frame[:, 6 + n:6 + 4 * n], (max_ues, 3, n))
        self.follower_x = _view(self.ue_stack, (1, max_ues, h * fu_dim))
        self.masks = {w: np.ones((1, w), dtype=bool) for w in range(1, max_ues + 1)}
        self.empty = (np.zeros((1, 1, self.ue_rows.shape[1]), dtype=np.float32),
                      np.zeros((1, 1), dtype=bool))
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
        for buffer in (self.global_x, self.ue_rows, self.ue_stack):
            buffer[:] = 0.0
        self.grants = np.zeros((self.max_ues, self.shape.n_rbgs), dtype=bool)
        self.bs_was_active = np.zeros(self.max_ues, dtype=bool)
        self.ue_was_active = np.zeros(self.max_ues, dtype=bool)
        self.se, self.capacity_table = None, None

    # --------------------------------------------------------------------------- leader
    def capacity(self, obs: LeaderObs) -> np.ndarray:
        """dPDUs one RBG carries per CSI state (eq. 1 from the BS's view), cached per SE table."""
        if obs.spectral_efficiency is not self.se:
            s, se = self.shape, np.asarray(obs.spectral_efficiency)
            self.se = obs.spectral_efficiency
            self.capacity_table = np.floor(s.rbg_resource_elements * se) / s.dpdu_bits
        return self.capacity_table

    def leader_inputs(self, obs: LeaderObs) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """global (1, Dg), per-UE (1, W, Db) in rank order, mask (1, W): W = max(I_t, 1)."""
        s, k = self.shape, self.shape.ucm_levels
        active, n_active = obs.active[0], int(obs.n_active[0])  # (I_max,) bool
        _shift(self.global_stack)
        self.outcome_columns[:] = self.outcome_table[obs.rbg_outcome[0]]
        self.global_stack[0, -1] = obs.t / s.episode_ttis
        self.global_x[0, 0] = n_active / POSITION_SCALE

        q = obs.queue_report[0]
        served = obs.served_rbgs[0].astype(np.float32)
        frame = self.bs_frame
        _shift(self.bs_stack)
        self.bs_stack[active > self.bs_was_active] = 0.0  # UEs that just arrived
        frame[:, 0] = active
        frame[:, 1] = q > 0
        frame[:, 2] = (np.log1p(q.astype(np.float32)) / self.log_capacity).astype(np.float32)
        frame[:, 3:6 + k] = self.csi_ucm_table[obs.csi[0] * k + obs.ucm[0]]
        frame[:, 6 + k] = served / (s.n_rbgs * (obs.t + 1))
        frame[:, 7 + k] = served / max(served.sum(), 1.0)
        frame[:, 8 + k:] = self.grants
        frame *= active[:, None]
        self.bs_was_active = active.copy()

        rows = self.ue_rows
        rows[:, 0] = q
        rows[:, 1] = self.capacity(obs)[obs.csi[0]]  # aged CSI
        if n_active == 0:
            return self.global_x, *self.empty
        ue_x = rows[active][None]  # (1, I_t, Db): rank order is slot order
        ue_x[0, :, 2] = self.positions[:n_active]  # (rank - 1) / POSITION_SCALE
        return self.global_x, ue_x, self.masks[n_active]

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
        n = self.shape.n_rbgs
        active = obs.active[0]
        b = obs.buffer_dpdus[0]
        fb = obs.feedback[0]  # (I_max, N)
        frame = self.ue_frame
        _shift(self.ue_stack)
        self.ue_stack[active > self.ue_was_active] = 0.0  # UEs that just arrived
        frame[:, 0] = active
        frame[:, 1] = b > 0
        frame[:, 2] = (np.log1p(b.astype(np.float32)) / self.log_capacity).astype(np.float32)
        frame[:, 3:6] = self.csi_table[obs.channel[0]]
        frame[:, 6:6 + n] = obs.dcm_bits[0]
        self.feedback_columns[:] = fb[:, None, :] == self.feedback_codes  # (I_max, 3, N)
        frame[:, 6 + 4 * n:6 + 5 * n] = fb != 0
        frame[:, 6 + 5 * n:] = self.ucm_table[obs.last_ucm[0]]
        frame *= active[:, None]
        self.ue_was_active = active.copy()
        return self.follower_x

    def followers(self, obs: FollowerObs) -> tuple[np.ndarray, np.ndarray]:
        """Bitmaps (I_max, N) bool and UCMs (I_max,) int64; inactive slots send nothing."""
        bitmap, ucm = self.backend.follower(self.follower_inputs(obs))
        active = obs.active[0]
        return bitmap[0] & active[:, None], np.where(active, ucm[0], 0).astype(np.int64)


def load_realtime(path: str | os.PathLike, max_ues: int = 16
                  ) -> RealtimeStudent | CompiledStudent:
    """The fastest served student this install has: the compiled one-call TTI
    (:class:`trainers.student.compiled.CompiledStudent`, the ``[realtime]`` extra: numba),
    else :class:`RealtimeStudent` on onnxruntime, with one log line saying so. Both give the
    same decisions (tests/test_compiled_student.py)."""
    if importlib.util.find_spec("numba") is None:
        logger.info("numba is not installed: serving the student with onnxruntime "
                    "(pip install 'agentic-mac[realtime]' for the compiled path)")
        return RealtimeStudent.load(path, max_ues, "onnx")
    from trainers.student.compiled import CompiledStudent

    return CompiledStudent.load(path, max_ues)
