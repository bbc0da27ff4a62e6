"""The hyper-cellular network (HCN) of the paper's Table IV, vectorised over B networks x C cells.

=====================  ==========================================================================
Agents                 tier 0: one CBS (fixed partition policy, :mod:`textgame.partition`);
                       C DBSs (leaders, any single-cell ``LeaderPolicy``); per cell ``local_ues``
                       local UEs and the edge UEs it shares with its neighbours (followers, any
                       ``FollowerPolicy``)
Topology               ``ring`` (edge UE e between cells e and (e+1) mod C, C >= 2) or ``line``
                       (edge UEs between cells e and e+1, e < C-1); a ring of one cell keeps
                       its edge UE as a fifth UE of that cell; ``edge_ues=False`` drops them
Pool                   M = C * N RBGs (N = ``scenario.cell.n_rbgs``) unless ``total_rbgs``
Leader action          per cell a DCM (B*C, N_view), entries 0..I_c (rank among the cell's UEs)
Follower action        per cell slot a bitmap (B*C, I_view, N_view) and a UCM (B*C, I_view)
Observations           :class:`CellLeaderObs` (a ``LeaderObs`` + ``rbg_share``), ``FollowerObs``
Rewards                per cell: F_b (eq. 5) per DBS, F_i (eq. 2) per cell slot (an edge UE has one
                       in each of its cells)
=====================  ==========================================================================

The policies see the B*C cells as B*C single-cell environments with I_view UE slots (locals, then
the cell's own edge UE, then its neighbour's; padded and masked) and N_view = the largest share
the partition policy can give (Equal: ceil(M/C) = N; Proportional/Random: ``max_share_rbgs``).
Entries of the DCM and bitmaps beyond a cell's current share are not executed (forced to 0);
``CellLeaderObs.rbg_share`` tells a policy its share. With C = 1 and no edge UE the cell view is
the single cell itself, and the network reproduces :class:`textgame.game.StackelbergGame` draw
for draw.

Order of events in TTI t (design §2 steps, per network):

1. Arrivals and channel of every UE (the single-cell :class:`UplinkSimulator` over all U UEs of the
   network and the pool of M RBGs: one FIFO buffer and one channel per UE, edge UEs included).
2. CBS partition, at the first TTI of every frame of ``partition_period_ttis``: shares (B, C) of
   the pool from the DBSs' reported demand (the sum of their UEs' last buffer status reports,
   an edge UE's reported to both of its DBSs), disjoint and covering the pool.
3. Each DBS emits its DCM over its share (eq. 1's intended bits d).
4. Each UE acts in each of its cells' views; an edge UE hears both DCMs and may transmit on the
   RBGs of either.
5. Transmission (eq. 1) per RBG of each cell's block; the blocks are disjoint and a UE only sends
   on the RBGs of its own cells, so there is no inter-cell collision.
6. Delivery: a UE's successful RBGs of all its cells are summed and drain its one FIFO once, so
   its delivered bits count once; they are credited to its home cell's RBGs first (an edge UE's
   home is the cell whose own edge UE it is), the rest to the neighbour's.
7. Utilities per cell (eqs. 2, 5, with N = the cell's share), feedback per cell for t+1.

Assumptions: an edge UE has one channel state, the same towards both DBSs; its decision in each
cell is taken by the follower policy on that cell's view (two UCMs, one per DBS), without
coordinating the two halves; UEs are fixed (no churn: ``scenario.cell.ue_counts`` is ignored);
every cell has the template's per-slot pattern of traffic models, Bernoulli rates and fixed
channel states (local j: entry j, edge UE: entry ``local_ues``, cyclically), so the mean offered
load per cell does not depend on C; RBGs are interchangeable, so a partition is its shares.
"""


from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from textgame.buffers import Deliveries
from textgame.game import FollowerObs, LeaderObs, intended_bits
from textgame.network_config import NetworkConfig, cell_views
from textgame.partition import make_partition
from textgame.simulator import IDLE, UplinkSimulator, carried_rbgs, resolve_rbgs
from textgame.utilities import follower_utility, leader_utility

CBS_STREAM = 1  # spawn key of the CBS's generator: its draws never shift the simulator's


@dataclass
class CellLeaderObs(LeaderObs):
    """A DBS's ``LeaderObs``; arrays (B*C, I_view), ``rbg_outcome`` (B*C, N_view)."""

    rbg_share: np.ndarray  # (B*C,) RBGs the DBS owns this TTI; DCM entries n >= share are void


@dataclass
class NetworkReport:
    """One TTI of B networks. Cell arrays are (B*C, I_view[, N_view]); UE arrays (B, U)."""

    t: int
    shares: np.ndarray  # (B, C) RBGs of each DBS
    transmitted: np.ndarray  # (B*C, I_view, N_view) bool: executed bitmaps
    rbg_outcome: np.ndarray  # (B*C, N_view): IDLE / SUCCESS / COLLISION / ERASURE (IDLE if void)
    cell_delivered_bits: np.ndarray  # (B*C, I_view): bits credited to this cell's RBGs
    cell_successes: np.ndarray  # (B*C, I_view): successful RBGs in this cell
    cell_attempts: np.ndarray  # (B*C, I_view): RBGs transmitted on in this cell
    cell_carried: np.ndarray  # (B*C, I_view): successful RBGs of this cell that carried data
    delivered_bits: np.ndarray  # (B, U): each UE's delivered bits, counted once
    successes: np.ndarray  # (B, U)
    attempts: np.ndarray  # (B, U)
    completed_dpdus: np.ndarray  # (B, U)
    arrived_dpdus: np.ndarray  # (B, U)
    dropped_dpdus: np.ndarray  # (B, U)
    buffer_dpdus: np.ndarray  # (B, U): occupancy after delivery
    deliveries: Deliveries  # env = network, ue = network UE
    done: bool


@dataclass
class NetworkStep:
    leader_reward: np.ndarray  # (B*C,) F_b,t of each DBS, eq. 5
    follower_reward: np.ndarray  # (B*C, I_view) F_i,t per cell slot, eq. 2
    done: bool
    leader_obs: CellLeaderObs | None  # next TTI's; None when done
    report: NetworkReport


class NetworkGame:
    """B networks of C cells in lock step: ``reset`` -> ``step_leader`` -> ``step_followers``.

    ``n_envs`` (= B*C), ``max_ues`` (I_view), ``n_rbgs`` (N_view) and ``ucm_levels`` size the
    single-cell policies that play every DBS and every cell slot.
    """

    def __init__(self, config: NetworkConfig, n_networks: int = 1) -> None:
        self.config = config
        self.sim = UplinkSimulator(config.network_scenario(), n_networks)
        self.partition = make_partition(config.partition)
        self.n_networks, self.n_cells, self.n_ues = n_networks, config.n_cells, config.n_ues
        self.n_envs = n_networks * config.n_cells
        self.n_rbgs = self.partition.max_share(config.pool_rbgs, self.n_cells, config.share_cap)
        self.ucm_levels = config.scenario.cell.ucm_levels
        view_ue, home = cell_views(config)  # (C, I_view)
        self.view_ue, self.max_ues = view_ue, view_ue.shape[1]
        self.is_edge = np.arange(self.n_ues) >= self.n_cells * config.local_ues  # (U,)
        shape = (n_networks,) + view_ue.shape  # (B, C, I_view)
        self._gather = np.maximum(view_ue, 0)
        self.active = np.broadcast_to(view_ue >= 0, shape).reshape(self.n_envs, -1).copy()
        self._padded = not self.active.all()  # a line's end cells lack an edge UE
        self._n_active = self.active.sum(axis=1)  # (B*C,) UEs are fixed: I_c
        dst = np.arange(n_networks)[:, None, None] * self.n_ues + view_ue  # (B, C, I_view)
        src = np.arange(dst.size).reshape(shape)
        neighbour = (view_ue >= 0) & ~home
        # index into [home values, neighbour values] (B, 2U) of each cell slot: one gather
        self._gather_kind = np.where(home, self._gather, self.n_ues + self._gather)  # (C, I_view)
        self._scatter = {True: (src[:, home], dst[:, home]),
                         False: (src[:, neighbour], dst[:, neighbour])}
        self._phase = "reset"

    # ------------------------------------------------------------------------ cell <-> UE
    def to_cells(self, x: np.ndarray) -> np.ndarray:
        """A UE array (B, U) seen from every cell slot: (B*C, I_view), 0 in padding slots."""
        cells = x[:, self._gather].reshape(self.n_envs, -1)
        return np.where(self.active, cells, 0) if self._padded else cells

    def to_cells_by_kind(self, home_x: np.ndarray, away_x: np.ndarray) -> np.ndarray:
        """Per cell slot (B*C, I_view): ``home_x`` (B, U) in home slots, ``away_x`` (B, U) in the
        neighbour slots of edge UEs, 0 in padding."""
        both = np.concatenate([home_x, away_x], axis=1)  # (B, 2U)
        cells = both[:, self._gather_kind].reshape(self.n_envs, -1)
        return np.where(self.active, cells, 0) if self._padded else cells

    def to_ues(self, x: np.ndarray, home: bool) -> np.ndarray:
        """A cell-slot array (B*C, I_view) back to UEs (B, U), from the home slots (``home``) or
        the neighbour slots of the edge UEs (0 for UEs without one)."""
        src, dst = self._scatter[home]
        out = np.zeros(self.n_networks * self.n_ues, dtype=x.dtype)
        out[dst] = x.ravel()[src]
        return out.reshape(self.n_networks, self.n_ues)

    # ---------------------------------------------------------------------------- API
    def reset(self, seed: int | np.random.SeedSequence | None = None) -> CellLeaderObs:
        seq = seed if isinstance(seed, np.random.SeedSequence) else np.random.SeedSequence(seed)
        self.sim.reset(seq)
        self.cbs_rng = np.random.default_rng(np.random.SeedSequence(
            seq.entropy, spawn_key=seq.spawn_key + (CBS_STREAM,), pool_size=seq.pool_size))
        v, i, n = self.n_envs, self.max_ues, self.n_rbgs
        self._ucm = np.zeros((v, i), dtype=np.int64)
        self._served = np.zeros((v, i), dtype=np.int64)  # U_t per cell slot
        self._queue_report = np.zeros((self.n_networks, self.n_ues), dtype=np.int64)
        self._outcome = np.full((v, n), IDLE, dtype=np.int8)
        self._feedback = np.full((v, i, n), IDLE, dtype=np.int8)
        self._partition()
        self._phase = "leader"
        return self.leader_obs()

    def _partition(self) -> None:
        """Step 2 of the order of events: the CBS splits the pool at the first TTI of a frame."""
        if self.sim.t % self.config.partition_period_ttis:
            return
        demand = self.to_cells(self._queue_report).reshape(
            self.n_networks, self.n_cells, -1).sum(axis=-1)  # (B, C) reported dPDUs
        self.shares = self.partition.shares(demand, self.config.pool_rbgs,
                                            self.config.share_cap, self.cbs_rng)  # (B, C)
        self._share = self.shares.reshape(-1)  # (B*C,)
        self._rbg_mask = np.arange(self.n_rbgs) < self._share[:, None]  # (B*C, N_view)
        self._whole_view = bool(self._rbg_mask.all())  # every DBS owns N_view RBGs (Equal)

    def leader_obs(self) -> CellLeaderObs:
        active, t = self.active.copy(), self.sim.t
        return CellLeaderObs(
            t=t, active=active, n_active=self._n_active.copy(), ucm=self._ucm.copy(),
            csi=self.to_cells(self.sim.channel.csi(t)), served_rbgs=self._served.copy(),
            queue_report=self.to_cells(self._queue_report), rbg_outcome=self._outcome.copy(),
            spectral_efficiency=self.sim.channel.spectral_efficiency,
            rbg_share=self._share.copy())

    def step_leader(self, dcm: np.ndarray) -> FollowerObs:
        """Every DBS's DCM (B*C, N_view), entries 0..I_c; entries beyond its share are void."""
        self._expect("leader")
        dcm = np.asarray(dcm)
        if dcm.shape != (self.n_envs, self.n_rbgs) or not np.issubdtype(dcm.dtype, np.integer):
            raise ValueError(f"dcm has shape {dcm.shape} and dtype {dcm.dtype}; expected integers "
                             f"of shape {(self.n_envs, self.n_rbgs)} (B*C, N_view)")
        n_active = self._n_active
        bad = (dcm < 0) | (dcm > n_active[:, None])
        if bad.any():
            v, n = np.argwhere(bad)[0]
            raise ValueError(f"dcm[{v}, {n}] = {dcm[v, n]} is invalid; allowed: 0 (nobody) to the "
                             f"number of UEs of the cell ({n_active[v]})")
        self._dcm = (dcm if self._whole_view else np.where(self._rbg_mask, dcm, 0)).astype(
            np.int64)
        self._intended = intended_bits(self._dcm, self.active)  # (B*C, I_view, N_view)
        self._phase = "followers"
        buffers = self.sim.buffers
        return FollowerObs(
            t=self.sim.t, active=self.active.copy(), buffer_dpdus=self.to_cells(buffers.count),
            buffer_bits=self.to_cells(buffers.bits),
            channel=self.to_cells(self.sim.channel.state), dcm_bits=self._intended.copy(),
            feedback=self._feedback.copy(), last_ucm=self._ucm.copy())

    def step_followers(self, bitmap: np.ndarray, ucm: np.ndarray) -> NetworkStep:
        """Execute the TTI for bitmaps (B*C, I_view, N_view) and UCMs (B*C, I_view)."""
        self._expect("followers")
        tx = self._check_actions(bitmap, ucm)  # (B*C, I_view, N_view) executed
        outcome, success, feedback = resolve_rbgs(tx, self.sim.rng, self.sim.cell.tbler)  # eq. 1
        report = self._deliver(tx, outcome, success.sum(axis=-1))
        reward, cell = self.config.scenario.reward, self.config.scenario.cell
        follower_reward = follower_utility(  # eq. 2, N = the cell's share
            report.cell_delivered_bits, report.cell_attempts, tx, self._intended, self.active,
            cell.dpdu_bits, reward, self._share[:, None])
        self._served = self._served + report.cell_carried  # U_t
        leader_reward = leader_utility(  # eq. 5 per DBS
            report.cell_delivered_bits, self._served, self.active, np.maximum(self._share, 1),
            self.sim.max_rbg_bits, reward)
        self._ucm = np.where(self.active, ucm, 0).astype(np.int64)
        self._outcome, self._feedback = outcome, feedback
        self._queue_report = report.buffer_dpdus.copy()
        self._phase = "reset" if report.done else "leader"
        if not report.done:
            self.sim.next_tti()
            self._partition()
        return NetworkStep(leader_reward, follower_reward, report.done,
                           None if report.done else self.leader_obs(), report)

    # ------------------------------------------------------------------------- internals
    def _expect(self, phase: str) -> None:
        if self._phase != phase:
            raise RuntimeError(f"the game expects {self._phase!r} next, not {phase!r}")

    def _check_actions(self, bitmap: np.ndarray, ucm: np.ndarray) -> np.ndarray:
        bitmap, ucm = np.asarray(bitmap), np.asarray(ucm)
        if bitmap.shape != (self.n_envs, self.max_ues, self.n_rbgs):
            raise ValueError(f"bitmap has shape {bitmap.shape}; expected "
                             f"{(self.n_envs, self.max_ues, self.n_rbgs)} (B*C, I_view, N_view)")
        if bitmap.dtype != bool and ((bitmap != 0) & (bitmap != 1)).any():
            v, i, n = np.argwhere((bitmap != 0) & (bitmap != 1))[0]
            raise ValueError(f"bitmap[{v}, {i}, {n}] = {bitmap[v, i, n]} is invalid; allowed: 0 "
                             "or 1")
        if ucm.shape != (self.n_envs, self.max_ues):
            raise ValueError(f"ucm has shape {ucm.shape}; expected {(self.n_envs, self.max_ues)}")
        bad = ((ucm < 0) | (ucm >= self.ucm_levels)) & self.active
        if bad.any():
            v, i = np.argwhere(bad)[0]
            raise ValueError(f"ucm[{v}, {i}] = {ucm[v, i]} is invalid; allowed: 0 to "
                             f"{self.ucm_levels - 1} (K = {self.ucm_levels})")
        tx = bitmap.astype(bool) & self.active[..., None]
        return tx if self._whole_view else tx & self._rbg_mask[:, None, :]

    def _deliver(self, tx: np.ndarray, outcome: np.ndarray, cell_successes: np.ndarray,
                 ) -> NetworkReport:
        """design §2 step 6 for the network: one drain per UE, credited to home RBGs first."""
        sim = self.sim
        per_rbg, buffered = sim.capacity(), sim.buffers.bits  # (B, U)
        home = self.to_ues(cell_successes, True)  # (B, U)
        away = self.to_ues(cell_successes, False)  # (B, U): an edge UE's neighbour cell
        delivered, completed, deliveries = sim.buffers.drain((home + away) * per_rbg, sim.t)
        home_bits = np.minimum(home * per_rbg, buffered)
        home_carried = carried_rbgs(home, buffered, per_rbg)
        away_carried = carried_rbgs(away, buffered - home_bits, per_rbg)
        attempts = tx.sum(axis=-1)  # (B*C, I_view)
        return NetworkReport(
            t=sim.t, shares=self.shares.copy(), transmitted=tx, rbg_outcome=outcome,
            cell_delivered_bits=self.to_cells_by_kind(home_bits, delivered - home_bits),
            cell_successes=cell_successes, cell_attempts=attempts,
            cell_carried=self.to_cells_by_kind(home_carried, away_carried),
            delivered_bits=delivered, successes=home + away,
            attempts=self.to_ues(attempts, True) + self.to_ues(attempts, False),
            completed_dpdus=completed, arrived_dpdus=sim.arrived_dpdus,
            dropped_dpdus=sim.dropped_dpdus, buffer_dpdus=sim.buffers.count.copy(),
            deliveries=deliveries, done=sim.t + 1 >= sim.cell.episode_ttis)
