"""Heuristic leader and follower policies (design §3), vectorised over (B, I_max).

A leader maps :class:`LeaderObs` to a DCM ``(B, N)``; a follower maps :class:`FollowerObs` to a
bitmap ``(B, I_max, N)`` and a UCM ``(B, I_max)``. Any leader composes with any follower:
``max_weight`` + ``dictator`` is a centralised scheduler, ``idle`` + ``s_aloha`` is contention.
Policies are reset at the start of every batch of episodes with a seeded ``numpy.random.Generator``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from textgame.config import check_int_at_least, check_real_in, fail_field
from textgame.game import FollowerObs, LeaderObs
from textgame.simulator import COLLISION, SUCCESS


class LeaderPolicy:
    name = "leader"

    def reset(self, n_envs: int, max_ues: int, n_rbgs: int, rng: np.random.Generator) -> None:
        self.n_envs, self.max_ues, self.n_rbgs, self.rng = n_envs, max_ues, n_rbgs, rng

    def act(self, obs: LeaderObs) -> np.ndarray:
        raise NotImplementedError


class FollowerPolicy:
    name = "follower"

    def reset(self, n_envs: int, max_ues: int, n_rbgs: int, ucm_levels: int,
              rng: np.random.Generator) -> None:
        self.n_envs, self.max_ues, self.n_rbgs, self.rng = n_envs, max_ues, n_rbgs, rng
        self.ucm_levels = ucm_levels

    def act(self, obs: FollowerObs) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError


# ----------------------------------------------------------------------------------- leaders
class IdleLeader(LeaderPolicy):
    """Schedules nobody: the DCM is all zeros (pair with contention-based followers)."""

    name = "idle"

    def act(self, obs: LeaderObs) -> np.ndarray:
        return np.zeros((self.n_envs, self.n_rbgs), dtype=np.int64)


class RandomLeader(LeaderPolicy):
    """Every RBG to a uniformly drawn entry of {0 (nobody), 1..I_t}."""

    name = "random"

    def act(self, obs: LeaderObs) -> np.ndarray:
        u = self.rng.random((self.n_envs, self.n_rbgs))
        return (u * (obs.n_active[:, None] + 1)).astype(np.int64)


class RoundRobinLeader(LeaderPolicy):
    """RBGs go to active UEs in cyclic order, continuing where the previous TTI stopped."""

    name = "round_robin"

    def reset(self, n_envs, max_ues, n_rbgs, rng) -> None:
        super().reset(n_envs, max_ues, n_rbgs, rng)
        self.pointer = np.zeros(n_envs, dtype=np.int64)  # (B,) next rank - 1

    def act(self, obs: LeaderObs) -> np.ndarray:
        n = np.maximum(obs.n_active, 1)[:, None]
        dcm = (self.pointer[:, None] + np.arange(self.n_rbgs)[None, :]) % n + 1
        self.pointer = (self.pointer + self.n_rbgs) % n[:, 0]
        return np.where(obs.n_active[:, None] > 0, dcm, 0)


class MaxWeightLeader(LeaderPolicy):
    """Each RBG to the UE of largest queue x spectral efficiency, from the BS's view.

    The queue is the last buffer status report (bits), the SE that of the aged CSI. RBGs are
    assigned one by one; a UE's reported queue is reduced by what each granted RBG can carry, so
    one UE is not granted more than it reported. An RBG whose best weight is 0 stays idle.
    """

    name = "max_weight"

    def __init__(self, dpdu_bits: int = 256, rbg_resource_elements: int = 672) -> None:
        self.dpdu_bits = dpdu_bits
        self.rbg_resource_elements = rbg_resource_elements

    def act(self, obs: LeaderObs) -> np.ndarray:
        se = obs.spectral_efficiency[obs.csi]  # (B, I_max)
        per_rbg = np.floor(self.rbg_resource_elements * se)  # eq. 1 from the BS's view
        queue = np.where(obs.active, obs.queue_report * self.dpdu_bits, 0).astype(np.float64)
        rank = np.cumsum(obs.active, axis=1)  # (B, I_max)
        rows = np.arange(self.n_envs)
        dcm = np.zeros((self.n_envs, self.n_rbgs), dtype=np.int64)
        for n in range(self.n_rbgs):
            weight = queue * se
            best = weight.argmax(axis=1)  # ties go to the lowest slot
            granted = weight[rows, best] > 0
            dcm[:, n] = np.where(granted, rank[rows, best], 0)
            queue[rows, best] -= np.where(granted, per_rbg[rows, best], 0)
            np.maximum(queue, 0, out=queue)
        return dcm


# --------------------------------------------------------------------------------- followers
class DictatorFollower(FollowerPolicy):
    """Obedient UE: transmits exactly its DCM bits; its UCM reports min(buffer dPDUs, K - 1)."""

    name = "dictator"

    def act(self, obs: FollowerObs) -> tuple[np.ndarray, np.ndarray]:
        return obs.dcm_bits.copy(), np.minimum(obs.buffer_dpdus, self.ucm_levels - 1)


class RandomFollower(FollowerPolicy):
    """Each bitmap bit is a fair coin; the UCM is uniform on 0..K-1."""

    name = "random"

    def act(self, obs: FollowerObs) -> tuple[np.ndarray, np.ndarray]:
        shape = (self.n_envs, self.max_ues)
        bitmap = self.rng.random(shape + (self.n_rbgs,)) < 0.5
        ucm = (self.rng.random(shape) * self.ucm_levels).astype(np.int64)
        return bitmap, ucm


@dataclass(frozen=True)
class SAlohaConfig:
    """Enhanced S-ALOHA (paper App. B-C); the paper's numbers were lost, these are assumed."""

    p0: float = 0.5
    """Initial (and reset) per-RBG transmission probability."""
    backoff: float = 0.5
    """Factor applied to p after a collision."""
    floor: float = 0.05
    """Lowest p reachable by backoff."""

    def __post_init__(self) -> None:
        for name in ("p0", "backoff", "floor"):
            check_real_in("SAlohaConfig", name, getattr(self, name), 0.0, 1.0)
        if self.floor > self.p0:
            fail_field("SAlohaConfig", "floor", self.floor, f"a number <= p0 ({self.p0})")


class SAlohaFollower(FollowerPolicy):
    """Legacy UE ignoring the DCM: with a non-empty buffer it sends on each RBG with probability p.

    After a TTI in which one of its transmissions collided, p <- max(p * backoff, floor); after a
    success, p <- p0 (success wins when both happened). UCM is always 0.
    """

    name = "s_aloha"

    def __init__(self, config: SAlohaConfig | None = None) -> None:
        self.config = config or SAlohaConfig()

    def reset(self, n_envs, max_ues, n_rbgs, ucm_levels, rng) -> None:
        super().reset(n_envs, max_ues, n_rbgs, ucm_levels, rng)
        self.p = np.full((n_envs, max_ues), self.config.p0)  # (B, I_max)

    def act(self, obs: FollowerObs) -> tuple[np.ndarray, np.ndarray]:
        c = self.config
        collided = (obs.feedback == COLLISION).any(axis=-1)
        succeeded = (obs.feedback == SUCCESS).any(axis=-1)
        self.p = np.where(collided, np.maximum(self.p * c.backoff, c.floor), self.p)
        self.p = np.where(succeeded, c.p0, self.p)
        draw = self.rng.random((self.n_envs, self.max_ues, self.n_rbgs))
        bitmap = (draw < self.p[..., None]) & (obs.buffer_dpdus > 0)[..., None] & obs.active[
            ..., None]
        return bitmap, np.zeros((self.n_envs, self.max_ues), dtype=np.int64)


def legacy_mask(active: np.ndarray, n_legacy: int) -> np.ndarray:
    """(B, I_max) bool: the last ``n_legacy`` active UEs of each env by rank (paper Table VII).

    Legacy UEs run a rigid heuristic beside the agentic ones; when an env has fewer than
    ``n_legacy`` active UEs, all of them are legacy.
    """
    rank = np.cumsum(active, axis=1)  # (B, I_max) 1-based rank of active slots
    return active & (rank > active.sum(axis=1, keepdims=True) - n_legacy)


class MixedFollower(FollowerPolicy):
    """Agentic UEs beside ``n_legacy`` legacy UEs (paper App. C-A, Table VII).

    Both policies see every UE's observation; each UE's action comes from the policy that owns
    it (:func:`legacy_mask`). The legacy policy is S-ALOHA in the paper.
    """

    name = "mixed"

    def __init__(self, agentic: FollowerPolicy, legacy: FollowerPolicy, n_legacy: int) -> None:
        check_int_at_least("MixedFollower", "n_legacy", n_legacy, 0)
        self.agentic, self.legacy, self.n_legacy = agentic, legacy, n_legacy

    def reset(self, n_envs, max_ues, n_rbgs, ucm_levels, rng) -> None:
        super().reset(n_envs, max_ues, n_rbgs, ucm_levels, rng)
        self.agentic.reset(n_envs, max_ues, n_rbgs, ucm_levels, rng)
        self.legacy.reset(n_envs, max_ues, n_rbgs, ucm_levels, rng)

    def act(self, obs: FollowerObs) -> tuple[np.ndarray, np.ndarray]:
        bitmap, ucm = self.agentic.act(obs)
        legacy_bitmap, legacy_ucm = self.legacy.act(obs)
        legacy = legacy_mask(obs.active, self.n_legacy)  # (B, I_max)
        return (np.where(legacy[..., None], legacy_bitmap, bitmap),
                np.where(legacy, legacy_ucm, ucm))


LEADERS: dict[str, type[LeaderPolicy]] = {
    cls.name: cls for cls in (MaxWeightLeader, RoundRobinLeader, RandomLeader, IdleLeader)}
FOLLOWERS: dict[str, type[FollowerPolicy]] = {
    cls.name: cls for cls in (DictatorFollower, SAlohaFollower, RandomFollower)}


def make_leader(name: str, cell=None) -> LeaderPolicy:
    """A leader by name; ``cell`` (CellConfig) sizes Max-Weight's capacity estimate."""
    if name not in LEADERS:
        raise ValueError(f"leader policy {name!r} is unknown; allowed: {sorted(LEADERS)}")
    if name == "max_weight" and cell is not None:
        return MaxWeightLeader(cell.dpdu_bits, cell.rbg_resource_elements)
    return LEADERS[name]()


def make_follower(name: str, s_aloha: SAlohaConfig | None = None) -> FollowerPolicy:
    if name not in FOLLOWERS:
        raise ValueError(f"follower policy {name!r} is unknown; allowed: {sorted(FOLLOWERS)}")
    return SAlohaFollower(s_aloha) if name == "s_aloha" else FOLLOWERS[name]()
