"""The CBS's tier-0 partition of the global RBG pool among the DBSs (paper §V-B5, Table IV).

One small interface, :class:`PartitionPolicy`, and three policies behind the name -> factory map
:data:`PARTITIONS` (:func:`make_partition` refuses an unknown name):

- ``equal`` (static): every DBS gets ``M // C`` RBGs; the first ``M % C`` cells one more;
- ``proportional`` (demand-aware): shares proportional to the DBSs' reported demand (the sum of
  their UEs' buffer status reports); with no demand anywhere, equal weights;
- ``random``: shares proportional to i.i.d. U(0, 1) weights drawn per cell and partition frame.

Every policy returns integer shares ``(B, C)`` that sum to the pool ``M`` with no share above the
cap ``max_share`` (the longest DCM a DBS can emit). RBGs are interchangeable in the cell model
(a capacity depends on the UE's channel, not on the RBG), so a partition is its shares: cell c
owns the contiguous block of the pool after cells 0..c-1 (:func:`block_layout`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable

import numpy as np


class PartitionPolicy(ABC):
    """Maps the DBSs' demand to disjoint RBG shares that cover the pool."""

    name = "partition"

    def max_share(self, total: int, n_cells: int, cap: int) -> int:
        """The largest share this policy can give one DBS: the DCM length N_view of the cells."""
        return min(cap, total)

    @abstractmethod
    def shares(self, demand: np.ndarray, total: int, cap: int,
               rng: np.random.Generator) -> np.ndarray:
        """Integer shares (B, C) summing to ``total`` per row, each <= ``cap``.

        ``demand`` (B, C) is each DBS's reported demand in dPDUs (non-negative).
        """


class EqualPartition(PartitionPolicy):
    name = "equal"

    def max_share(self, total: int, n_cells: int, cap: int) -> int:
        return -(-total // n_cells)

    def shares(self, demand, total, cap, rng) -> np.ndarray:
        n_cells = demand.shape[1]
        row = total // n_cells + (np.arange(n_cells) < total % n_cells)  # (C,)
        return np.broadcast_to(row, demand.shape).astype(np.int64)


class ProportionalPartition(PartitionPolicy):
    name = "proportional"

    def shares(self, demand, total, cap, rng) -> np.ndarray:
        return proportional_shares(np.asarray(demand, dtype=np.float64), total, cap)


class RandomPartition(PartitionPolicy):
    name = "random"

    def shares(self, demand, total, cap, rng) -> np.ndarray:
        return proportional_shares(rng.random(demand.shape), total, cap)


PARTITIONS: dict[str, Callable[[], PartitionPolicy]] = {
    cls.name: cls for cls in (EqualPartition, ProportionalPartition, RandomPartition)}


def make_partition(name: str) -> PartitionPolicy:
    if name not in PARTITIONS:
        raise ValueError(f"partition policy {name!r} is unknown; allowed: {sorted(PARTITIONS)}")
    return PARTITIONS[name]()


def _capped_quotas(weights: np.ndarray, total: int, cap: int) -> np.ndarray:
    """Real quotas (B, C) proportional to ``weights``, summing to ``total``, none above ``cap``.

    Water-filling: a quota above the cap is cut to it and the excess goes to the uncut cells in
    proportion to their weights (equally where those are all 0). Each round cuts at least one
    more cell, so at most C rounds; C * cap >= total keeps it feasible.
    """
    none = weights.sum(axis=1, keepdims=True) <= 0
    weights = np.where(none, 1.0, weights)  # no demand anywhere: equal weights
    quota = total * weights / weights.sum(axis=1, keepdims=True)
    cut = np.zeros(quota.shape, dtype=bool)
    while True:
        over = quota > cap
        if not over.any():
            return quota
        cut |= over
        excess = np.where(over, quota - cap, 0.0).sum(axis=1, keepdims=True)
        quota = np.minimum(quota, cap)
        free = np.where(cut, 0.0, weights)
        free = np.where(free.sum(axis=1, keepdims=True) > 0, free, ~cut)
        quota = quota + excess * free / np.maximum(free.sum(axis=1, keepdims=True), 1e-300)


def proportional_shares(weights: np.ndarray, total: int, cap: int) -> np.ndarray:
    """Integer shares (B, C) proportional to ``weights`` (B, C) by the largest-remainder method.

    Each cell gets the floor of its capped quota; the RBGs left over go one each to the cells of
    largest remainder (ties to the lower cell index). Rows sum to ``total``; no share exceeds
    ``cap``.
    """
    quota = _capped_quotas(weights, total, cap)  # (B, C)
    base = np.minimum(np.floor(quota), cap).astype(np.int64)
    left = total - base.sum(axis=1, keepdims=True)  # (B, 1), < C
    remainder = np.where(base < cap, quota - base, -np.inf)
    order = np.argsort(-remainder, axis=1, kind="stable")
    rank = np.argsort(order, axis=1, kind="stable")  # 0 = largest remainder
    return base + (rank < left)


def block_layout(shares: np.ndarray, n_view: int) -> np.ndarray:
    """Global RBG of each DBS's RBG slot: (B, C, n_view), -1 where the slot is beyond the share.

    Cell c owns pool RBGs ``offset_c .. offset_c + share_c - 1``, ``offset_c`` = the shares of
    cells 0..c-1; its DCM entry n addresses pool RBG ``offset_c + n``.
    """
    offset = np.cumsum(shares, axis=1) - shares  # (B, C)
    slot = np.arange(n_view)[None, None, :]
    return np.where(slot < shares[..., None], offset[..., None] + slot, -1)
