"""Three-state Markov channel with uniform dwell times and aged CSI (design §2 step 2, eq. 46)."""

from __future__ import annotations

import numpy as np

from textgame.config import ChannelConfig

POOR, MEDIUM, GOOD = 0, 1, 2


def stationary_distribution(matrix: np.ndarray) -> np.ndarray:
    """A law pi with pi P = pi and sum(pi) = 1, by least squares.

    Exact and unique for an irreducible chain (periodic ones included); where it is not unique
    (stay_prob = 1: every law is stationary) the minimum-norm solution, the uniform law.
    """
    n = len(matrix)
    system = np.vstack([matrix.T - np.eye(n), np.ones((1, n))])
    target = np.concatenate([np.zeros(n), [1.0]])
    pi = np.linalg.lstsq(system, target, rcond=None)[0]
    return np.clip(pi, 0.0, None) / np.clip(pi, 0.0, None).sum()


class MarkovChannel:
    """True channel state q (B, I_max) of every UE slot and the BS's estimate q_hat = q_{t - delta}.

    Each UE holds a dwell timer in ms; when it runs out at a TTI boundary the DTMC makes one
    transition (which may keep the state) and a new dwell time is drawn from U[d_min, d_max].
    """

    def __init__(self, config: ChannelConfig, tti_ms: float) -> None:
        self.config = config
        self.tti_ms = tti_ms
        self.matrix = np.asarray(config.transition_matrix())  # (3, 3)
        self._cumulative = np.cumsum(self.matrix, axis=1)  # (3, 3)
        self._cumulative[:, -1] = 1.0
        if config.initial == "stationary":
            initial = stationary_distribution(self.matrix)
        else:
            initial = np.full(3, 1.0 / 3.0)
        self._initial_cumulative = np.cumsum(initial)
        self._initial_cumulative[-1] = 1.0
        self.spectral_efficiency = np.asarray(config.spectral_efficiency)  # (3,)
        self.depth = config.csi_delay_ttis + 1
        self.state = np.zeros((0, 0), dtype=np.int64)  # (B, I_max)
        self.dwell_ms = np.zeros((0, 0))  # (B, I_max)
        self.history = np.zeros((0, 0, self.depth), dtype=np.int64)  # (B, I_max, delta + 1)

    def _draw_dwell(self, rng: np.random.Generator, shape) -> np.ndarray:
        return rng.uniform(self.config.dwell_min_ms, self.config.dwell_max_ms, size=shape)

    def _draw_initial(self, rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
        if self.config.initial == "fixed":  # slot i starts in fixed_states[i % len]
            fixed = np.asarray(self.config.fixed_states)
            return np.broadcast_to(fixed[np.arange(shape[1]) % len(fixed)], shape).copy()
        return np.searchsorted(self._initial_cumulative, rng.random(shape), side="right")

    def reset(self, rng: np.random.Generator, shape: tuple[int, int]) -> None:
        """Draw q_0 for every slot; the CSI history starts filled with q_0."""
        self.state = self._draw_initial(rng, shape)
        self.dwell_ms = self._draw_dwell(rng, shape)
        self.history = np.repeat(self.state[..., None], self.depth, axis=-1)

    def refresh(self, rng: np.random.Generator, joined: np.ndarray, t: int) -> None:
        """Give the slots in ``joined`` (B, I_max) a fresh channel and CSI history."""
        fresh = self._draw_initial(rng, joined.shape)
        self.state = np.where(joined, fresh, self.state)
        self.dwell_ms = np.where(joined, self._draw_dwell(rng, joined.shape), self.dwell_ms)
        self.history = np.where(joined[..., None], self.state[..., None], self.history)

    def advance(self, rng: np.random.Generator, t: int) -> None:
        """Let one TTI pass and record q_t in the CSI history (call at the start of TTI t >= 1)."""
        self.dwell_ms = self.dwell_ms - self.tti_ms
        expired = self.dwell_ms <= 0.0
        u = rng.random(self.state.shape)
        nxt = (u[..., None] >= self._cumulative[self.state]).sum(axis=-1)  # eq. 46 transition
        self.state = np.where(expired, nxt, self.state)
        self.dwell_ms = np.where(expired, self.dwell_ms + self._draw_dwell(rng, u.shape),
                                 self.dwell_ms)
        self.history[..., t % self.depth] = self.state

    def csi(self, t: int) -> np.ndarray:
        """The BS's estimate q_hat_t = q_{max(t - delta, 0)}: (B, I_max) state indices."""
        return self.history[..., max(t - self.config.csi_delay_ttis, 0) % self.depth]
