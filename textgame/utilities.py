"""Leader and follower utilities (design §2, the paper's eqs. 2, 3 and 5) and Jain's index."""

from __future__ import annotations

import numpy as np

from textgame.config import RewardConfig


def jain_index(x: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """JFI(x) = (sum x)^2 / (I * sum x^2) over the last axis, I = entries in ``mask``.

    Returns 0 where nothing was served (sum x == 0), by the convention of design §2.
    """
    x = np.asarray(x, dtype=np.float64)
    mask = np.ones(x.shape, dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
    x = np.where(mask, x, 0.0)
    total = x.sum(axis=-1)
    squares = (x * x).sum(axis=-1)
    n = mask.sum(axis=-1)
    denominator = n * squares
    safe = np.where(denominator > 0, denominator, 1.0)
    return np.where(total > 0, total * total / safe, 0.0)


def consistency(bitmap: np.ndarray, intended: np.ndarray,
                n_rbgs: np.ndarray | int | None = None) -> np.ndarray:
    """S(b, d) = 1 - Hamming(b, d) / N over the last axis (eq. 3).

    N is the last axis's length unless ``n_rbgs`` (broadcastable to the result) says how many of
    its RBGs the cell owns (a DBS's share in a network); the others must be 0 in both b and d.
    """
    n = bitmap.shape[-1] if n_rbgs is None else np.maximum(n_rbgs, 1)
    return 1.0 - (bitmap.astype(bool) != intended.astype(bool)).sum(axis=-1) / n


def follower_utility(delivered_bits: np.ndarray, attempts: np.ndarray, bitmap: np.ndarray,
                     intended: np.ndarray, active: np.ndarray, dpdu_bits: int,
                     reward: RewardConfig, n_rbgs: np.ndarray | int | None = None,
                     ) -> np.ndarray:
    """F_i,t = w1 * min(1, rx / max(tx, 1)) + w2 * S(b, d) (eq. 2); 0 for inactive slots.

    rx = delivered bits / D (dPDUs), tx = RBGs transmitted on, padding included. Shapes (B, I_max);
    ``n_rbgs`` is passed to :func:`consistency`.
    """
    rx = delivered_bits / dpdu_bits
    delivery = np.minimum(1.0, rx / np.maximum(attempts, 1))
    utility = reward.omega1 * delivery + reward.omega2 * consistency(bitmap, intended, n_rbgs)
    return np.where(active, utility, 0.0)


def leader_utility(delivered_bits: np.ndarray, served_rbgs: np.ndarray, active: np.ndarray,
                   n_rbgs: int, max_rbg_bits: int, reward: RewardConfig) -> np.ndarray:
    """F_b,t = (1 - lam) * sum_i delivered_i / (N * c_max) + lam * JFI(U_t) (eq. 5): (B,).

    ``served_rbgs`` is U_t: per UE, the RBGs that carried its data successfully up to t.
    """
    throughput = np.where(active, delivered_bits, 0).sum(axis=-1) / (n_rbgs * max_rbg_bits)
    lam = reward.fairness_weight
    return (1.0 - lam) * throughput + lam * jain_index(served_rbgs, active)
