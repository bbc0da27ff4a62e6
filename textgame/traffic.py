"""Per-UE packet arrival processes (design §2 step 1, eqs. 47-49), vectorised over (B, I_max)."""

from __future__ import annotations

import numpy as np

from textgame.config import TRAFFIC_MODELS, TrafficConfig


class TrafficModel:
    """dPDU arrivals per UE slot; the model and Bernoulli rate of slot i are assigned cyclically.

    The phase of each periodic or bursty UE (``offset_i``) is drawn uniformly at every episode reset
    and when a UE joins, so that UEs do not all fire in the same TTI.
    """

    def __init__(self, config: TrafficConfig, max_ues: int) -> None:
        self.config = config
        slots = np.arange(max_ues)
        kinds = np.array([TRAFFIC_MODELS.index(m) for m in config.models])
        self.kind = kinds[slots % len(kinds)]  # (I_max,) index into TRAFFIC_MODELS
        rates = np.asarray(config.bernoulli_rates)
        self.rate = rates[slots % len(rates)]  # (I_max,) lambda_i of eq. 47
        self._bernoulli = self.kind == 0
        self._periodic = self.kind == 1
        self._bursty = self.kind == 2
        self.cycle = config.on_ttis + config.off_ttis
        self.offset = np.zeros((0, max_ues), dtype=np.int64)  # (B, I_max)

    def reset(self, rng: np.random.Generator, n_envs: int) -> None:
        self.offset = self._draw_offsets(rng, (n_envs, len(self.kind)))

    def rephase(self, rng: np.random.Generator, joined: np.ndarray) -> None:
        """Draw fresh phases for the UE slots in ``joined`` (B, I_max) bool."""
        fresh = self._draw_offsets(rng, joined.shape)
        self.offset = np.where(joined, fresh, self.offset)

    def _draw_offsets(self, rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
        u = rng.random(shape)
        period = np.where(self._periodic, self.config.period_ttis, self.cycle)
        return (u * period).astype(np.int64)

    def arrivals(self, t: int, rng: np.random.Generator, n_envs: int) -> np.ndarray:
        """dPDUs arriving at TTI ``t``: (B, I_max) int64 (before the buffer-capacity check)."""
        count = np.zeros((n_envs, len(self.kind)), dtype=np.int64)
        if self._bernoulli.any():  # eq. 47
            hits = rng.random(count.shape) < self.rate
            count += hits & self._bernoulli
        if self._periodic.any():  # eq. 48
            count += ((t + self.offset) % self.config.period_ttis == 0) & self._periodic
        if self._bursty.any():  # eq. 49: a burst of S dPDUs opens every ON period
            opens = ((t + self.offset) % self.cycle == 0) & self._bursty
            count += opens * self.config.burst_dpdus
        return count
