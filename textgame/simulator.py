"""The numeric uplink cell (design §2): the order of events of a TTI, vectorised over B envs.

``reset(seed)`` opens TTI 0 (arrivals and channel). ``step(bitmap)`` executes transmission
(eq. 1), collisions, TBLER erasures and ARQ delivery for the open TTI, applies churn, then opens
the next TTI.
Decisions (DCM, bitmaps, UCMs) and utilities live one level up, in :mod:`textgame.game`.
All episodes of a batch run in lock step: every environment is done after ``T`` TTIs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from textgame.buffers import Deliveries, FifoBuffers
from textgame.channel import MarkovChannel
from textgame.config import ScenarioConfig
from textgame.traffic import TrafficModel

# Per-RBG outcome of a TTI, seen by the BS and (for its own transmissions) by each UE.
IDLE, SUCCESS, COLLISION, ERASURE = 0, 1, 2, 3
OUTCOMES = ("idle", "success", "collision", "erasure")


@dataclass
class TTIReport:
    """What happened in one TTI; arrays are (B, I_max[, N]) unless noted."""

    t: int
    active: np.ndarray  # (B, I_max) bool: UEs present during the TTI
    transmitted: np.ndarray  # (B, I_max, N) bool: effective bitmaps (inactive UEs send nothing)
    rbg_outcome: np.ndarray  # (B, N) int: IDLE / SUCCESS / COLLISION / ERASURE
    feedback: np.ndarray  # (B, I_max, N) int: outcome of the UE's own transmissions, IDLE elsewhere
    capacity_bits: np.ndarray  # (B, I_max) int: c_i,t of eq. 1
    delivered_bits: np.ndarray  # (B, I_max) int
    carried_rbgs: np.ndarray  # (B, I_max) int: successful RBGs that carried data (not padding)
    successes: np.ndarray  # (B, I_max) int: successful RBGs (padding included)
    attempts: np.ndarray  # (B, I_max) int: RBGs transmitted on (padding included): tx_i,t
    arrived_dpdus: np.ndarray  # (B, I_max) int: arrivals of this TTI
    dropped_dpdus: np.ndarray  # (B, I_max) int: arrivals refused by a full buffer
    departed_bits: np.ndarray  # (B, I_max) int: bits thrown away when a UE left after this TTI
    joined: np.ndarray  # (B, I_max) bool: slots that joined after this TTI (churn)
    completed_dpdus: np.ndarray  # (B, I_max) int
    deliveries: Deliveries
    buffer_dpdus: np.ndarray  # (B, I_max) int: occupancy after delivery, before churn
    done: bool


def resolve_rbgs(tx: np.ndarray, rng: np.random.Generator, tbler: float,
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-RBG outcome of transmissions ``tx`` (B, I, N) bool (design §2 step 5, eq. 1).

    An RBG succeeds iff exactly one UE transmits and no erasure (probability ``tbler``, one draw
    per RBG) hits it; two or more transmitters collide and all fail. Returns the outcome (B, N),
    each UE's successful RBGs (B, I, N) and its feedback (B, I, N): the outcome where it
    transmitted, IDLE elsewhere.
    """
    senders = tx.sum(axis=1)  # (B, N)
    erased = rng.random(senders.shape) < tbler  # (B, N)
    outcome = np.full(senders.shape, IDLE, dtype=np.int8)
    outcome[senders == 1] = SUCCESS
    outcome[(senders == 1) & erased] = ERASURE
    outcome[senders >= 2] = COLLISION  # every transmitter of a collided RBG fails
    success = tx & (outcome == SUCCESS)[:, None, :]  # (B, I, N)
    feedback = np.where(tx, outcome[:, None, :], IDLE).astype(np.int8)
    return outcome, success, feedback


def carried_rbgs(successes: np.ndarray, buffered_bits: np.ndarray,
                 per_rbg_bits: np.ndarray) -> np.ndarray:
    """Successful RBGs that carried data, not padding: RBGs are filled in order, so
    ceil(buffered / c) of the successful ones carry data. All arrays (B, I)."""
    return np.minimum(successes, -(-buffered_bits // per_rbg_bits))


class UplinkSimulator:
    """B independent uplink cells with up to I_max UEs and N RBGs each."""

    def __init__(self, scenario: ScenarioConfig, n_envs: int = 1) -> None:
        if isinstance(n_envs, bool) or not isinstance(n_envs, int) or n_envs < 1:
            raise ValueError(f"n_envs = {n_envs!r} is invalid; allowed: an integer >= 1")
        self.scenario = scenario
        self.cell = cell = scenario.cell
        self.n_envs = n_envs
        self.max_ues = cell.max_ues
        self.n_rbgs = cell.n_rbgs
        self.traffic = TrafficModel(scenario.traffic, cell.max_ues)
        self.channel = MarkovChannel(scenario.channel, cell.tti_ms)
        # eq. 1: capacity of one RBG per channel state, c = floor(n_RB * 12 * 14 * eta)
        self.rbg_bits = np.floor(
            cell.rbg_resource_elements * self.channel.spectral_efficiency).astype(np.int64)
        self.max_rbg_bits = int(self.rbg_bits.max())  # c_max of eq. 5
        self._counts = np.asarray(cell.ue_counts)
        self._count_probs = None if cell.ue_probs is None else np.asarray(cell.ue_probs)
        self.rng = np.random.default_rng()
        self.t = 0
        self.active = np.zeros((n_envs, self.max_ues), dtype=bool)
        self.buffers = FifoBuffers(n_envs, self.max_ues, cell.buffer_dpdus, cell.dpdu_bits)
        self._arrived = np.zeros((n_envs, self.max_ues), dtype=np.int64)
        self._dropped = np.zeros_like(self._arrived)

    # ----------------------------------------------------------------------------------- reset
    def reset(self, seed: int | np.random.SeedSequence | None = None) -> None:
        """Start a new episode in every environment and open TTI 0; ``seed`` fixes all draws."""
        self.rng = np.random.default_rng(seed)
        b, i_max = self.n_envs, self.max_ues
        n_ues = self.rng.choice(self._counts, size=b, p=self._count_probs)  # I ~ D(I)
        self.active = np.arange(i_max)[None, :] < n_ues[:, None]
        self.traffic.reset(self.rng, b)
        self.channel.reset(self.rng, (b, i_max))
        self.buffers = FifoBuffers(b, i_max, self.cell.buffer_dpdus, self.cell.dpdu_bits)
        self.buffers.push(self.active * self.scenario.traffic.initial_dpdus, 0)  # Table VIII
        self.t = 0
        self._open_tti()

    def _open_tti(self) -> None:
        """design §2 steps 1-2 for TTI self.t: the channel moves, then traffic arrives."""
        if self.t > 0:
            self.channel.advance(self.rng, self.t)
        arrivals = self.traffic.arrivals(self.t, self.rng, self.n_envs) * self.active
        self._arrived = arrivals
        self._dropped = self.buffers.push(arrivals, self.t)

    # ------------------------------------------------------------------------------------ step
    def capacity(self) -> np.ndarray:
        """c_i,t of eq. 1 for the open TTI from the true channel: (B, I_max) bits per RBG."""
        return self.rbg_bits[self.channel.state]

    def step(self, bitmap: np.ndarray) -> TTIReport:
        """Execute the open TTI for transmission bitmaps (B, I_max, N) and open the next one."""
        bitmap = np.asarray(bitmap)
        expected = (self.n_envs, self.max_ues, self.n_rbgs)
        if bitmap.shape != expected:
            raise ValueError(f"bitmap has shape {bitmap.shape}; expected {expected} (B, I_max, N)")
        if bitmap.dtype != bool and ((bitmap != 0) & (bitmap != 1)).any():
            b, i, n = np.argwhere((bitmap != 0) & (bitmap != 1))[0]
            raise ValueError(
                f"bitmap[{b}, {i}, {n}] = {bitmap[b, i, n]} is invalid; allowed: 0 or 1")
        tx = bitmap.astype(bool) & self.active[..., None]  # (B, I_max, N)
        outcome, success, feedback = resolve_rbgs(tx, self.rng, self.cell.tbler)
        per_rbg = self.capacity()  # (B, I_max)
        successes = success.sum(axis=-1)
        buffered = self.buffers.bits
        delivered, completed, deliveries = self.buffers.drain(successes * per_rbg, self.t)
        carried = carried_rbgs(successes, buffered, per_rbg)
        report = TTIReport(
            t=self.t, active=self.active.copy(), transmitted=tx, rbg_outcome=outcome,
            feedback=feedback, capacity_bits=per_rbg, delivered_bits=delivered,
            carried_rbgs=carried, successes=successes, attempts=tx.sum(axis=-1),
            arrived_dpdus=self._arrived, dropped_dpdus=self._dropped,
            departed_bits=np.zeros_like(delivered), joined=np.zeros_like(self.active),
            completed_dpdus=completed,
            deliveries=deliveries, buffer_dpdus=self.buffers.count.copy(),
            done=self.t + 1 >= self.cell.episode_ttis)
        if not report.done:
            if self.cell.churn:
                report.departed_bits, report.joined = self._churn()
            self.next_tti()
        return report

    def next_tti(self) -> None:
        """Close the executed TTI and open the next one (steps 1-2 of design §2)."""
        self.t += 1
        self._open_tti()

    @property
    def arrived_dpdus(self) -> np.ndarray:
        """dPDUs that arrived in the open TTI: (B, I_max)."""
        return self._arrived

    @property
    def dropped_dpdus(self) -> np.ndarray:
        """Arrivals of the open TTI refused by a full buffer: (B, I_max)."""
        return self._dropped

    def _churn(self) -> tuple[np.ndarray, np.ndarray]:
        """design §2 step 8: slots join and leave; a leaving UE's buffer is lost.

        A cell is never emptied: where every UE would leave and none join, the lowest active
        slot stays.
        """
        leave = self.active & (self.rng.random(self.active.shape) < self.cell.leave_prob)
        join = ~self.active & (self.rng.random(self.active.shape) < self.cell.join_prob)
        emptied = np.flatnonzero((self.active & ~leave).sum(axis=1) + join.sum(axis=1) == 0)
        leave[emptied, self.active[emptied].argmax(axis=1)] = False
        departed = self.buffers.clear(leave)
        self.active = (self.active & ~leave) | join
        if join.any():
            self.channel.refresh(self.rng, join, self.t + 1)
            self.traffic.rephase(self.rng, join)
        return departed, join

    # ------------------------------------------------------------------------------ snapshots
    def state_dict(self) -> dict:
        """Everything needed to continue the batch exactly (RNG included)."""
        return {
            "t": self.t, "rng": self.rng.bit_generator.state, "active": self.active.copy(),
            "arrived": self._arrived.copy(), "dropped": self._dropped.copy(),
            "buffers": self.buffers.state_dict(), "traffic_offset": self.traffic.offset.copy(),
            "channel": {k: getattr(self.channel, k).copy()
                        for k in ("state", "dwell_ms", "history")},
        }

    def load_state_dict(self, state: dict) -> None:
        self.t = int(state["t"])
        self.rng = np.random.default_rng()
        self.rng.bit_generator.state = state["rng"]
        self.active = np.array(state["active"], copy=True)
        self._arrived = np.array(state["arrived"], copy=True)
        self._dropped = np.array(state["dropped"], copy=True)
        self.buffers.load_state_dict(state["buffers"])
        self.traffic.offset = np.array(state["traffic_offset"], copy=True)
        for k, v in state["channel"].items():
            setattr(self.channel, k, np.array(v, copy=True))
