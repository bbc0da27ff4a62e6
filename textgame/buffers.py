"""FIFO buffers in bits with per-dPDU arrival TTIs (design §2 steps 1 and 6), vectorised.

Each UE slot owns a ring of ``Q`` dPDU arrival TTIs. Only the head dPDU can be partly sent, so the
buffered bits are ``count * D - head_sent``. Draining is ARQ-style: successful capacity removes bits
from the head; every dPDU whose last bit leaves is received with latency ``t - arrival``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Deliveries:
    """dPDUs completed in one TTI, flattened: one entry per received dPDU, in FIFO order per UE."""

    env: np.ndarray  # (n,) environment index
    ue: np.ndarray  # (n,) UE slot
    arrival: np.ndarray  # (n,) arrival TTI
    latency: np.ndarray  # (n,) TTIs from arrival to reception (>= 0)


class FifoBuffers:
    def __init__(self, n_envs: int, max_ues: int, capacity: int, dpdu_bits: int) -> None:
        self.capacity = capacity
        self.dpdu_bits = dpdu_bits
        shape = (n_envs, max_ues)
        self.arrival = np.zeros(shape + (capacity,), dtype=np.int64)  # (B, I_max, Q) ring
        self.head = np.zeros(shape, dtype=np.int64)  # (B, I_max) ring index of the oldest dPDU
        self.count = np.zeros(shape, dtype=np.int64)  # (B, I_max) dPDUs held (head included)
        self.head_sent = np.zeros(shape, dtype=np.int64)  # (B, I_max) bits of the head already sent

    @property
    def bits(self) -> np.ndarray:
        """Buffered bits per UE: (B, I_max)."""
        return self.count * self.dpdu_bits - self.head_sent

    def clear(self, where: np.ndarray | None = None) -> np.ndarray:
        """Empty the buffers in ``where`` (all if None); returns the bits that were thrown away."""
        where = np.ones(self.count.shape, dtype=bool) if where is None else where
        lost = np.where(where, self.bits, 0)
        self.count[where] = 0
        self.head_sent[where] = 0
        self.head[where] = 0
        return lost

    def push(self, arrivals: np.ndarray, t: int) -> np.ndarray:
        """Enqueue ``arrivals`` (B, I_max) dPDUs born at TTI ``t``; returns the dropped counts."""
        accepted = np.minimum(arrivals, self.capacity - self.count)
        for j in range(int(accepted.max(initial=0))):
            env, ue = np.nonzero(j < accepted)
            ring = (self.head[env, ue] + self.count[env, ue] + j) % self.capacity
            self.arrival[env, ue, ring] = t
        self.count += accepted
        return arrivals - accepted

    def drain(self, capacity_bits: np.ndarray, t: int) -> tuple[np.ndarray, np.ndarray, Deliveries]:
        """Send up to ``capacity_bits`` (B, I_max) from the heads at TTI ``t``.

        Returns (delivered bits, completed dPDUs, the deliveries with their latencies).
        """
        delivered = np.minimum(capacity_bits, self.bits)
        sent = self.head_sent + delivered
        completed = sent // self.dpdu_bits  # <= count, as delivered <= buffered bits
        envs, ues, arrivals = [], [], []
        for j in range(int(completed.max(initial=0))):
            env, ue = np.nonzero(j < completed)
            ring = (self.head[env, ue] + j) % self.capacity
            envs.append(env)
            ues.append(ue)
            arrivals.append(self.arrival[env, ue, ring])
        if envs:
            env, ue, arrival = (np.concatenate(x) for x in (envs, ues, arrivals))
            # stable sort keeps the ring order j within each UE, i.e. FIFO order
            order = np.argsort(env * self.count.shape[1] + ue, kind="stable")
            env, ue, arrival = env[order], ue[order], arrival[order]
        else:
            env = ue = arrival = np.zeros(0, dtype=np.int64)
        self.head = (self.head + completed) % self.capacity
        self.count -= completed
        self.head_sent = sent - completed * self.dpdu_bits
        return delivered, completed, Deliveries(env, ue, arrival, t - arrival)

    def state_dict(self) -> dict[str, np.ndarray]:
        return {k: getattr(self, k).copy() for k in ("arrival", "head", "count", "head_sent")}

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        for k, v in state.items():
            setattr(self, k, np.array(v, copy=True))
