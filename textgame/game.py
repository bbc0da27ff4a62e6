"""The multi-follower Stackelberg game over the simulator (design §2 steps 3-7).

Each TTI the leader (BS) sees :class:`LeaderObs` and emits a DCM ``(B, N)``: entry n names
the active UE (1-based rank among the active slots, 0 = nobody) that RBG n is intended for.
Each follower (UE) then sees :class:`FollowerObs`, including its own intended bits d_i,t, and
answers with a bitmap ``(B, I_max, N)`` and a UCM ``(B, I_max)`` in 0..K-1 that the BS reads at t+1.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from textgame.config import ScenarioConfig
from textgame.simulator import IDLE, TTIReport, UplinkSimulator
from textgame.utilities import follower_utility, leader_utility


@dataclass
class LeaderObs:
    """o_b,t: the BS's view at the start of TTI t. Arrays are (B, I_max) unless noted."""

    t: int
    active: np.ndarray  # bool
    n_active: np.ndarray  # (B,) I_t
    ucm: np.ndarray  # last UCM of each UE (0 before the first)
    csi: np.ndarray  # aged channel estimate q_hat (0 poor, 1 medium, 2 good)
    served_rbgs: np.ndarray  # U_t: RBGs that carried the UE's data so far this episode
    queue_report: np.ndarray  # dPDUs buffered at the end of the last TTI (buffer status report)
    rbg_outcome: np.ndarray  # (B, N) last TTI's outcome per RBG (IDLE at t = 0)
    spectral_efficiency: np.ndarray  # (3,) eta per CSI state, for schedulers


@dataclass
class FollowerObs:
    """o_i,t: each UE's local view once the DCM is known. Arrays are (B, I_max[, N])."""

    t: int
    active: np.ndarray  # bool
    buffer_dpdus: np.ndarray  # dPDUs in the UE's FIFO (a partly sent head counts)
    buffer_bits: np.ndarray
    channel: np.ndarray  # the UE's own true channel state q_i,t
    dcm_bits: np.ndarray  # (B, I_max, N) bool: d_i,t of this TTI's DCM
    feedback: np.ndarray  # (B, I_max, N) outcome of the UE's own last transmissions
    last_ucm: np.ndarray  # the UE's previous UCM


@dataclass
class GameStep:
    """The result of one TTI."""

    leader_reward: np.ndarray  # (B,) F_b,t, eq. 5
    follower_reward: np.ndarray  # (B, I_max) F_i,t, eq. 2; 0 for inactive slots
    done: bool
    leader_obs: LeaderObs | None  # next TTI's leader observation; None when done
    report: TTIReport
    dcm: np.ndarray  # (B, N) the DCM that was executed
    intended: np.ndarray  # (B, I_max, N) d_i,t
    bitmap: np.ndarray  # (B, I_max, N) bitmaps as emitted (inactive slots zeroed)
    ucm: np.ndarray  # (B, I_max)
    served_rbgs: np.ndarray  # (B, I_max) U_t after this TTI
    invalid_leader: np.ndarray  # (B,) bool: the leader's action had to be replaced (text layer)
    invalid_followers: np.ndarray  # (B, I_max) bool


def active_rank(active: np.ndarray) -> np.ndarray:
    """1-based rank of each active slot among its environment's active slots; 0 if inactive.
    ``active`` (B, I_max) bool."""
    return np.cumsum(active, axis=1) * active


def intended_bits(dcm: np.ndarray, active: np.ndarray) -> np.ndarray:
    """d_i,t,n = 1[a_n = rank(i)] for a DCM (B, N) and active slots (B, I_max): (B, I_max, N)."""
    return (dcm[:, None, :] == active_rank(active)[:, :, None]) & active[..., None]


class StackelbergGame:
    """Turn order per TTI: ``reset`` -> ``step_leader(dcm)`` -> ``step_followers(bitmap, ucm)``."""

    def __init__(self, scenario: ScenarioConfig | None = None, n_envs: int = 1) -> None:
        self.scenario = scenario or ScenarioConfig()
        self.sim = UplinkSimulator(self.scenario, n_envs)
        self.n_envs, self.max_ues, self.n_rbgs = n_envs, self.sim.max_ues, self.sim.n_rbgs
        self.ucm_levels = self.scenario.cell.ucm_levels
        self._phase = "reset"

    # ------------------------------------------------------------------------------ helpers
    @property
    def rank(self) -> np.ndarray:
        """1-based rank of each active slot among its environment's active slots; 0 if inactive."""
        return active_rank(self.sim.active)

    def intended_bits(self, dcm: np.ndarray) -> np.ndarray:
        """d_i,t,n = 1[a_n = rank(i)]: (B, I_max, N) bool."""
        return intended_bits(dcm, self.sim.active)

    def _expect(self, phase: str) -> None:
        if self._phase != phase:
            raise RuntimeError(f"the game expects {self._phase!r} next, not {phase!r}")

    # --------------------------------------------------------------------------------- API
    def reset(self, seed: int | np.random.SeedSequence | None = None) -> LeaderObs:
        self.sim.reset(seed)
        shape = (self.n_envs, self.max_ues)
        self._ucm = np.zeros(shape, dtype=np.int64)
        self._served = np.zeros(shape, dtype=np.int64)
        self._queue_report = np.zeros(shape, dtype=np.int64)
        self._outcome = np.full((self.n_envs, self.n_rbgs), IDLE, dtype=np.int8)
        self._feedback = np.full(shape + (self.n_rbgs,), IDLE, dtype=np.int8)
        self._phase = "leader"
        return self.leader_obs()

    def leader_obs(self) -> LeaderObs:
        active = self.sim.active.copy()
        return LeaderObs(
            t=self.sim.t, active=active, n_active=active.sum(axis=1), ucm=self._ucm.copy(),
            csi=self.sim.channel.csi(self.sim.t).copy(), served_rbgs=self._served.copy(),
            queue_report=self._queue_report.copy(), rbg_outcome=self._outcome.copy(),
            spectral_efficiency=self.sim.channel.spectral_efficiency)

    def step_leader(self, dcm: np.ndarray) -> FollowerObs:
        """Broadcast the DCM (B, N) with entries in 0..I_t; returns the followers' observations."""
        self._expect("leader")
        dcm = np.asarray(dcm)
        if dcm.shape != (self.n_envs, self.n_rbgs) or not np.issubdtype(dcm.dtype, np.integer):
            raise ValueError(f"dcm has shape {dcm.shape} and dtype {dcm.dtype}; expected integers "
                             f"of shape {(self.n_envs, self.n_rbgs)} (B, N)")
        n_active = self.sim.active.sum(axis=1)
        bad = (dcm < 0) | (dcm > n_active[:, None])
        if bad.any():
            b, n = np.argwhere(bad)[0]
            raise ValueError(f"dcm[{b}, {n}] = {dcm[b, n]} is invalid; allowed: 0 (nobody) to the "
                             f"number of active UEs ({n_active[b]})")
        self._dcm = dcm.astype(np.int64)
        self._intended = self.intended_bits(self._dcm)
        self._phase = "followers"
        buffers = self.sim.buffers
        return FollowerObs(
            t=self.sim.t, active=self.sim.active.copy(), buffer_dpdus=buffers.count.copy(),
            buffer_bits=buffers.bits, channel=self.sim.channel.state.copy(),
            dcm_bits=self._intended.copy(), feedback=self._feedback.copy(),
            last_ucm=self._ucm.copy())

    def step_followers(self, bitmap: np.ndarray, ucm: np.ndarray,
                       invalid_leader: np.ndarray | None = None,
                       invalid_followers: np.ndarray | None = None) -> GameStep:
        """Execute the TTI for bitmaps (B, I_max, N) and UCMs (B, I_max) in 0..K-1.

        ``invalid_*`` flag actions the text layer replaced by the no-op (counted in the KPIs).
        """
        self._expect("followers")
        ucm = np.asarray(ucm)
        if ucm.shape != (self.n_envs, self.max_ues):
            raise ValueError(f"ucm has shape {ucm.shape}; expected {(self.n_envs, self.max_ues)}")
        active = self.sim.active.copy()
        bad = ((ucm < 0) | (ucm >= self.ucm_levels)) & active
        if bad.any():
            b, i = np.argwhere(bad)[0]
            raise ValueError(f"ucm[{b}, {i}] = {ucm[b, i]} is invalid; allowed: 0 to "
                             f"{self.ucm_levels - 1} (K = {self.ucm_levels})")
        report = self.sim.step(bitmap)
        bitmap = report.transmitted
        ucm = np.where(active, ucm, 0).astype(np.int64)
        reward = self.scenario.reward
        self._served = self._served + report.carried_rbgs  # U_t
        follower_reward = follower_utility(  # eq. 2
            report.delivered_bits, report.attempts, bitmap, self._intended, active,
            self.scenario.cell.dpdu_bits, reward)
        leader_reward = leader_utility(  # eq. 5
            report.delivered_bits, self._served, active, self.n_rbgs, self.sim.max_rbg_bits,
            reward)
        served = self._served.copy()
        # what the BS learns for t+1: UCMs, per-RBG outcomes and buffer status reports
        # copies: the caller owns the returned step, the game owns its state
        self._ucm, self._outcome = ucm.copy(), report.rbg_outcome.copy()
        self._feedback, self._queue_report = report.feedback.copy(), report.buffer_dpdus.copy()
        if report.joined.any():  # a joining UE starts afresh
            for array in (self._ucm, self._served, self._queue_report):
                array[report.joined] = 0
            self._feedback[report.joined] = IDLE
        self._phase = "reset" if report.done else "leader"
        no_flags = np.zeros(self.n_envs, dtype=bool)
        return GameStep(
            leader_reward=leader_reward, follower_reward=follower_reward, done=report.done,
            leader_obs=None if report.done else self.leader_obs(), report=report, dcm=self._dcm,
            intended=self._intended, bitmap=bitmap, ucm=ucm, served_rbgs=served,
            invalid_leader=no_flags if invalid_leader is None else np.asarray(invalid_leader),
            invalid_followers=(np.zeros_like(active) if invalid_followers is None
                               else np.asarray(invalid_followers) & active))

    # ------------------------------------------------------------------------------ snapshots
    def state_dict(self) -> dict:
        keys = ("_ucm", "_served", "_queue_report", "_outcome", "_feedback")
        state = {k: getattr(self, k).copy() for k in keys}
        state.update(phase=self._phase, sim=self.sim.state_dict())
        if self._phase == "followers":
            state.update(dcm=self._dcm.copy(), intended=self._intended.copy())
        return state

    def load_state_dict(self, state: dict) -> None:
        self.sim.load_state_dict(state["sim"])
        for k in ("_ucm", "_served", "_queue_report", "_outcome", "_feedback"):
            setattr(self, k, np.array(state[k], copy=True))
        self._phase = state["phase"]
        if self._phase == "followers":
            self._dcm, self._intended = state["dcm"].copy(), state["intended"].copy()
