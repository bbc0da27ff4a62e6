"""Numeric features of the distilled students (paper App. C-C), vectorised over (B, I_max).

The students read the same history stacks as the MARL baselines (:mod:`trainers.marl.features`:
H frames, newest first) plus a few columns of the current TTI that a scheduler needs and that
keep their meaning for any number of UEs:

- leader, per UE in rank order (``ue_x``, width = the largest I_t of the batch, no cap):
  ``[queue, capacity, position, *history]`` where ``queue`` is the last buffer status report and
  ``capacity`` the bits one RBG carries at the aged CSI (eq. 1 from the BS's view), both in
  dPDUs and *unscaled*: the DCM decoder of :class:`trainers.student.networks.LeaderStudent`
  subtracts the grants it has made from them. ``position`` = (rank - 1) / POSITION_SCALE lets
  the student break ties the way rank-ordered schedulers do;
- leader, global (``global_x``): ``[I_t / POSITION_SCALE, *RBG-outcome history]``;
- follower, per UE slot: the MARL UE history stack (its DCM bits are columns 6..6+N).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from textgame.game import LeaderObs
from trainers.marl.features import FollowerFeatures, LeaderFeatures, gather_by_rank

POSITION_SCALE = 8.0  # ranks and UE counts enter as k / 8: O(1) for the paper's I <= 10
RAW_COLUMNS = 2  # queue, capacity: the leader's unscaled columns, read by the DCM decoder
DCM_BITS_OFFSET = 6  # the follower frame's d_i,t columns (trainers.marl.features)


@dataclass(frozen=True)
class CellShape:
    """What the features depend on: N, K, Q, T, D and the RBG's resource elements (eq. 1)."""

    n_rbgs: int
    ucm_levels: int
    buffer_dpdus: int
    episode_ttis: int
    dpdu_bits: int
    rbg_resource_elements: int

    @classmethod
    def of(cls, cell) -> CellShape:
        """From a :class:`textgame.config.CellConfig`."""
        return cls(cell.n_rbgs, cell.ucm_levels, cell.buffer_dpdus, cell.episode_ttis,
                   cell.dpdu_bits, cell.rbg_resource_elements)


def leader_dims(shape: CellShape, history_len: int) -> tuple[int, int]:
    """(global width Dg, per-UE width Db) of :class:`StudentLeaderFeatures`."""
    base = LeaderFeatures(history_len, shape.n_rbgs, shape.ucm_levels, shape.buffer_dpdus,
                          shape.episode_ttis)
    return 1 + base.global_dim, RAW_COLUMNS + 1 + base.ue_dim


def follower_dim(shape: CellShape, history_len: int) -> int:
    return FollowerFeatures(history_len, shape.n_rbgs, shape.ucm_levels, shape.buffer_dpdus).dim


class StudentLeaderFeatures:
    """``push(obs)`` -> global (B, Dg), per-UE (B, W, Db) in rank order, mask (B, W), W = max I_t.

    ``record(dcm, active)`` stores the DCM that was executed (the history's previous grants).
    """

    def __init__(self, shape: CellShape, history_len: int) -> None:
        self.shape = shape
        self.base = LeaderFeatures(history_len, shape.n_rbgs, shape.ucm_levels,
                                   shape.buffer_dpdus, shape.episode_ttis)

    def reset(self, n_envs: int, max_ues: int) -> None:
        self.base.reset(n_envs, max_ues)

    def record(self, dcm: np.ndarray, active: np.ndarray) -> None:
        self.base.record(dcm, active)

    def push(self, obs: LeaderObs) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        s = self.shape
        history_g, history_ue = self.base.push(obs)  # (B, H * Fg), (B, I_max, H * Fb)
        se = np.asarray(obs.spectral_efficiency)[obs.csi]  # (B, I_max), aged CSI
        capacity = np.floor(s.rbg_resource_elements * se) / s.dpdu_bits  # eq. 1, in dPDUs
        rank = np.cumsum(obs.active, axis=1)  # (B, I_max)
        current = np.stack([obs.queue_report, capacity, (rank - 1) / POSITION_SCALE], axis=-1)
        ue_x = np.concatenate([current.astype(np.float32), history_ue], axis=-1)
        width = max(int(obs.n_active.max()), 1)
        ue_x, mask = gather_by_rank(ue_x, obs.active, width)  # (B, W, Db), (B, W)
        count = (obs.n_active / POSITION_SCALE).astype(np.float32)[:, None]
        return np.concatenate([count, history_g], axis=-1), ue_x, mask


def scatter_by_rank(values: np.ndarray, active: np.ndarray) -> np.ndarray:
    """Inverse of ``gather_by_rank`` for (B, W, ...) rows: -> (B, I_max, ...) in slot order."""
    rank = np.cumsum(active, axis=1) * active  # (B, I_max), 0 = inactive
    out = np.zeros(active.shape + values.shape[2:], dtype=values.dtype)
    b, i = np.nonzero(active)
    out[b, i] = values[b, rank[b, i] - 1]
    return out


class StudentFollowerFeatures(FollowerFeatures):
    """The MARL UE history stack: ``push(obs)`` -> (B, I_max, Du) float32."""

    def __init__(self, shape: CellShape, history_len: int) -> None:
        super().__init__(history_len, shape.n_rbgs, shape.ucm_levels, shape.buffer_dpdus)

