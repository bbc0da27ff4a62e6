"""Observation features of the MARL baselines (paper App. B-E), vectorised over (B, I_max).

UE i sees a history stack of its local frames (buffer status, its own channel's spectral
efficiency, this TTI's DCM bits, the feedback on and the bitmap of its previous transmission,
its previous UCM). The BS sees the global RBG-state history (per-RBG outcomes) and, per UE, a
history of what it knows of that UE (buffer status report, aged CSI, last UCM, service so far,
its own previous grant). Frames are stacked newest first; before t = 0 and for a UE that (re)joins,
older frames are zeros. Features are numpy; the networks turn them into tensors.

The BS networks see UEs in *rank order* (the k-th active UE in slot k - 1), the order in which
the DCM names them: :func:`gather_by_rank` compacts the active slots, zero-pads to any width
(MAPPO-G with I < I_cap) or truncates (I > I_cap: those UEs are invisible to the BS).
"""

from __future__ import annotations

import numpy as np

from textgame.game import FollowerObs, LeaderObs
from textgame.simulator import COLLISION, ERASURE, SUCCESS

N_CSI = 3  # poor, medium, good
N_OUTCOMES = 4  # idle, success, collision, erasure


def follower_frame_dim(n_rbgs: int, ucm_levels: int) -> int:
    return 6 + 5 * n_rbgs + ucm_levels


def global_frame_dim(n_rbgs: int) -> int:
    return N_OUTCOMES * n_rbgs + 1


def bs_ue_frame_dim(n_rbgs: int, ucm_levels: int) -> int:
    return 8 + ucm_levels + n_rbgs


def _one_hot(index: np.ndarray, size: int) -> np.ndarray:
    return np.eye(size, dtype=np.float32)[np.clip(index, 0, size - 1)]


def _buffer_status(dpdus: np.ndarray, capacity: int) -> list[np.ndarray]:
    dpdus = dpdus.astype(np.float32)
    return [(dpdus > 0).astype(np.float32)[..., None],
            (np.log1p(dpdus) / np.log1p(capacity)).astype(np.float32)[..., None]]


class _History:
    """A (B, I, H, F) stack, newest frame first; rows whose ``fresh`` flag is set restart."""

    def __init__(self, shape: tuple[int, ...], history_len: int, frame_dim: int) -> None:
        self.stack = np.zeros(shape + (history_len, frame_dim), dtype=np.float32)

    def push(self, frame: np.ndarray, fresh: np.ndarray | None = None) -> np.ndarray:
        self.stack = np.roll(self.stack, 1, axis=-2)
        if fresh is not None:
            self.stack[fresh] = 0.0
        self.stack[..., 0, :] = frame
        return self.stack.reshape(self.stack.shape[:-2] + (-1,))  # (..., H * F)


class FollowerFeatures:
    """Per-UE history stacks; ``push(obs)`` -> (B, I_max, H * F_u) float32."""

    def __init__(self, history_len: int, n_rbgs: int, ucm_levels: int,
                 buffer_capacity: int) -> None:
        self.history_len, self.n_rbgs, self.ucm_levels = history_len, n_rbgs, ucm_levels
        self.buffer_capacity = buffer_capacity
        self.dim = history_len * follower_frame_dim(n_rbgs, ucm_levels)

    def reset(self, n_envs: int, max_ues: int) -> None:
        self.history = _History((n_envs, max_ues), self.history_len,
                                follower_frame_dim(self.n_rbgs, self.ucm_levels))
        self.was_active = np.zeros((n_envs, max_ues), dtype=bool)

    def push(self, obs: FollowerObs) -> np.ndarray:
        active = obs.active
        fb = obs.feedback
        parts = [active.astype(np.float32)[..., None],
                 *_buffer_status(obs.buffer_dpdus, self.buffer_capacity),
                 _one_hot(obs.channel, N_CSI),  # the UE's own (true) SE class
                 obs.dcm_bits.astype(np.float32),
                 *((fb == k).astype(np.float32) for k in (SUCCESS, COLLISION, ERASURE)),
                 (fb != 0).astype(np.float32),  # its previous bitmap: it sent where it has feedback
                 _one_hot(obs.last_ucm, self.ucm_levels)]
        frame = np.concatenate(parts, axis=-1) * active[..., None]  # (B, I_max, F_u)
        out = self.history.push(frame, fresh=active & ~self.was_active)
        self.was_active = active.copy()
        return out


class LeaderFeatures:
    """BS view: ``push(obs)`` -> global (B, H * F_g) and per-UE (B, I_max, H * F_b), slot order.

    ``record(dcm, active)`` stores the DCM the BS just sent, so the next frame holds each UE's
    previous grant (the BS remembers its own decisions; the game does not echo them).
    """

    def __init__(self, history_len: int, n_rbgs: int, ucm_levels: int, buffer_capacity: int,
                 episode_ttis: int) -> None:
        self.history_len, self.n_rbgs, self.ucm_levels = history_len, n_rbgs, ucm_levels
        self.buffer_capacity, self.episode_ttis = buffer_capacity, episode_ttis
        self.global_dim = history_len * global_frame_dim(n_rbgs)
        self.ue_dim = history_len * bs_ue_frame_dim(n_rbgs, ucm_levels)

    def reset(self, n_envs: int, max_ues: int) -> None:
        self.globals = _History((n_envs,), self.history_len, global_frame_dim(self.n_rbgs))
        self.ues = _History((n_envs, max_ues), self.history_len,
                            bs_ue_frame_dim(self.n_rbgs, self.ucm_levels))
        self.grants = np.zeros((n_envs, max_ues, self.n_rbgs), dtype=bool)
        self.was_active = np.zeros((n_envs, max_ues), dtype=bool)

    def record(self, dcm: np.ndarray, active: np.ndarray) -> None:
        rank = np.cumsum(active, axis=1) * active  # (B, I_max), 0 = inactive
        self.grants = (dcm[:, None, :] == rank[:, :, None]) & active[..., None]

    def push(self, obs: LeaderObs) -> tuple[np.ndarray, np.ndarray]:
        active = obs.active
        outcome = _one_hot(obs.rbg_outcome, N_OUTCOMES).reshape(len(active), -1)  # (B, 4N)
        clock = np.full((len(active), 1), obs.t / self.episode_ttis, dtype=np.float32)
        global_x = self.globals.push(np.concatenate([outcome, clock], axis=-1))
        served = obs.served_rbgs.astype(np.float32)
        share = served / np.maximum(served.sum(axis=1, keepdims=True), 1.0)
        parts = [active.astype(np.float32)[..., None],
                 *_buffer_status(obs.queue_report, self.buffer_capacity),
                 _one_hot(obs.csi, N_CSI),  # aged estimate q_hat
                 _one_hot(obs.ucm, self.ucm_levels),
                 (served / (self.n_rbgs * (obs.t + 1)))[..., None], share[..., None],
                 self.grants.astype(np.float32)]
        frame = np.concatenate(parts, axis=-1) * active[..., None]  # (B, I_max, F_b)
        ue_x = self.ues.push(frame, fresh=active & ~self.was_active)
        self.was_active = active.copy()
        return global_x, ue_x


def gather_by_rank(ue_x: np.ndarray, active: np.ndarray,
                   width: int) -> tuple[np.ndarray, np.ndarray]:
    """Compact active slots into rank order: (B, width, D) features and (B, width) mask.

    Row k holds the (k+1)-th active UE, i.e. the UE a DCM entry k + 1 names. Rows past the
    active count are zeros (padding); active UEs of rank > width are dropped (truncation).
    """
    n_envs, max_ues = active.shape
    order = np.argsort(~active, axis=1, kind="stable")  # active slots first, in slot order
    out = np.zeros((n_envs, width, ue_x.shape[-1]), dtype=np.float32)
    k = min(width, max_ues)
    picked = np.take_along_axis(ue_x, order[:, :k, None], axis=1)
    mask = np.zeros((n_envs, width), dtype=bool)
    mask[:, :k] = np.take_along_axis(active, order[:, :k], axis=1)
    out[:, :k] = picked * mask[:, :k, None]
    return out, mask
