"""A PettingZoo AEC environment over one uplink cell (design §4, last bullet).

Conventions a MARL user must know:

- Agents: ``possible_agents = ["bs", "ue_0", ..., "ue_{I_max-1}"]``; ``agents`` is "bs" plus the UE
  slots active in the current TTI. I is drawn per episode from D(I) by the simulator.
- Turn order per TTI: "bs" emits the DCM, then every active UE in slot order emits its bitmap and
  UCM; after the last UE the TTI is executed (:meth:`StackelbergGame.step_followers`) and every
  agent that took part gets its reward at once: "bs" F_b,t (eq. 5), "ue_i" F_i,t (eq. 2). Between
  turns rewards are 0; ``last()`` returns the reward accumulated since the agent's previous turn.
- Actions: "bs" ``MultiDiscrete([I_max + 1] * N)``, entry n names the rank (1-based, among the
  active slots) of the UE that RBG n is intended for; 0 and any entry greater than the number of
  active UEs mean "nobody", so every sample of the space is a valid DCM. A UE acts with
  ``{"bitmap": MultiBinary(N), "ucm": Discrete(K)}``.
- Observations: "bs" sees :class:`LeaderObs` padded to I_max with the active mask; "ue_i" sees its
  own row of :class:`FollowerObs`. A UE's ``dcm_bits`` exist only once the bs has acted: before
  that (at the bs's turn, and in the final observation after the last TTI) a UE observes its
  current local state with ``dcm_bits`` all 0.
- Episodes end after T TTIs: every agent is *truncated* (a time limit, not a terminal state).
- Churn (``CellConfig.join_prob`` / ``leave_prob`` > 0): a UE that leaves after TTI t is
  *terminated* and removed on its dead step, before the bs acts at t+1; a UE that joins enters
  ``agents`` at t+1. A slot that leaves and later rejoins comes back under its old name, which
  ``pettingzoo.test.api_test`` forbids ("agents cannot resurrect"): the env supports full churn, but
  only join-only or leave-only churn passes ``api_test``.
- Diagnostics: ``env.unwrapped.last_step`` is the :class:`GameStep` of the last executed TTI (its
  ``report`` feeds the KPIs); ``env.unwrapped.game`` is the underlying game. ``infos`` are empty.
- Seeding: ``reset(seed)`` calls ``StackelbergGame.reset(seed)``, so the env and a game reset with
  the same seed draw the same episode. A later ``reset()`` without a seed continues a seeded env
  reproducibly (children of ``SeedSequence(seed)``); an env never seeded draws fresh entropy.
"""

from __future__ import annotations

from typing import Any

import gymnasium
import numpy as np
from gymnasium import spaces
from pettingzoo import AECEnv
from pettingzoo.utils import wrappers

from textgame.config import ScenarioConfig
from textgame.game import FollowerObs, GameStep, LeaderObs, StackelbergGame
from textgame.simulator import OUTCOMES

LEADER = "bs"


def _count(high: int, size: int = 1) -> spaces.Box:
    return spaces.Box(0, high, shape=(size,), dtype=np.int64)


def leader_space(scenario: ScenarioConfig) -> spaces.Dict:
    """Observation space of "bs": the fields of :class:`LeaderObs` for one env, padded to I_max."""
    cell, i_max = scenario.cell, scenario.cell.max_ues
    se = np.asarray(scenario.channel.spectral_efficiency)
    return spaces.Dict({
        "t": _count(cell.episode_ttis - 1),
        "active": spaces.MultiBinary(i_max),
        "n_active": _count(i_max),
        "ucm": spaces.MultiDiscrete([cell.ucm_levels] * i_max),
        "csi": spaces.MultiDiscrete([len(se)] * i_max),
        "served_rbgs": _count(cell.episode_ttis * cell.n_rbgs, i_max),
        "queue_report": _count(cell.buffer_dpdus, i_max),
        "rbg_outcome": spaces.MultiDiscrete([len(OUTCOMES)] * cell.n_rbgs),
        "spectral_efficiency": spaces.Box(0.0, se.max(), shape=se.shape, dtype=np.float64),
    })


def follower_space(scenario: ScenarioConfig) -> spaces.Dict:
    """Observation space of "ue_i": its own row of :class:`FollowerObs`."""
    cell = scenario.cell
    return spaces.Dict({
        "t": _count(cell.episode_ttis - 1),
        "active": spaces.MultiBinary(1),
        "buffer_dpdus": _count(cell.buffer_dpdus),
        "buffer_bits": _count(cell.buffer_dpdus * cell.dpdu_bits),
        "channel": spaces.Discrete(len(scenario.channel.spectral_efficiency)),
        "dcm_bits": spaces.MultiBinary(cell.n_rbgs),
        "feedback": spaces.MultiDiscrete([len(OUTCOMES)] * cell.n_rbgs),
        "last_ucm": spaces.Discrete(cell.ucm_levels),
    })


def leader_dict(obs: LeaderObs) -> dict[str, np.ndarray]:
    """Environment 0 of a :class:`LeaderObs` in the layout of :func:`leader_space`."""
    return {
        "t": np.array([obs.t], dtype=np.int64),
        "active": obs.active[0].astype(np.int8),
        "n_active": obs.n_active[:1].astype(np.int64),
        "ucm": obs.ucm[0].astype(np.int64),
        "csi": obs.csi[0].astype(np.int64),
        "served_rbgs": obs.served_rbgs[0].astype(np.int64),
        "queue_report": obs.queue_report[0].astype(np.int64),
        "rbg_outcome": obs.rbg_outcome[0].astype(np.int64),
        "spectral_efficiency": np.array(obs.spectral_efficiency, dtype=np.float64),
    }


def follower_dict(obs: FollowerObs, slot: int) -> dict[str, Any]:
    """UE ``slot`` of environment 0 of a :class:`FollowerObs` in the layout of
    :func:`follower_space`."""
    return {
        "t": np.array([obs.t], dtype=np.int64),
        "active": obs.active[0, slot:slot + 1].astype(np.int8),
        "buffer_dpdus": obs.buffer_dpdus[0, slot:slot + 1].astype(np.int64),
        "buffer_bits": obs.buffer_bits[0, slot:slot + 1].astype(np.int64),
        "channel": np.int64(obs.channel[0, slot]),
        "dcm_bits": obs.dcm_bits[0, slot].astype(np.int8),
        "feedback": obs.feedback[0, slot].astype(np.int64),
        "last_ucm": np.int64(obs.last_ucm[0, slot]),
    }


class UplinkAECEnv(AECEnv):
    """One uplink cell as an AEC game: "bs" first, then the active UEs (see the module doc)."""

    metadata = {"render_modes": ["ansi"], "name": "uplink_mac_v0", "is_parallelizable": False}

    def __init__(self, scenario: ScenarioConfig | None = None, render_mode: str | None = None):
        super().__init__()
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode = {render_mode!r} is invalid; allowed: None or "
                             f"{self.metadata['render_modes']}")
        self.render_mode = render_mode
        self.game = StackelbergGame(scenario, n_envs=1)
        self.scenario = scenario = self.game.scenario
        i_max, n = self.game.max_ues, self.game.n_rbgs
        self.possible_agents = [LEADER] + [f"ue_{i}" for i in range(i_max)]
        self.action_spaces = {LEADER: spaces.MultiDiscrete([i_max + 1] * n)}
        self.observation_spaces = {LEADER: leader_space(scenario)}
        for agent in self.possible_agents[1:]:  # one space object per agent, seeded separately
            self.action_spaces[agent] = spaces.Dict({
                "bitmap": spaces.MultiBinary(n), "ucm": spaces.Discrete(scenario.cell.ucm_levels)})
            self.observation_spaces[agent] = follower_space(scenario)
        self._seeds: np.random.SeedSequence | None = None
        self.last_step: GameStep | None = None
        """The :class:`GameStep` of the last executed TTI (None before the first)."""

    def observation_space(self, agent: str) -> spaces.Space:
        return self.observation_spaces[agent]

    def action_space(self, agent: str) -> spaces.Space:
        return self.action_spaces[agent]

    # --------------------------------------------------------------------------------- reset
    def reset(self, seed: int | None = None, options: dict | None = None) -> None:
        if seed is not None:
            self._seeds, episode_seed = np.random.SeedSequence(seed), seed
        else:
            episode_seed = None if self._seeds is None else self._seeds.spawn(1)[0]
        self._leader_obs = self.game.reset(episode_seed)
        self._follower_obs = self._pending_follower_obs(
            np.zeros((1, self.game.max_ues, self.game.n_rbgs), dtype=np.int8))
        self.last_step = None
        self._order = self._turn_order()
        self.agents = list(self._order)
        self.rewards = {a: 0.0 for a in self.agents}
        self._cumulative_rewards = {a: 0.0 for a in self.agents}
        self.terminations = {a: False for a in self.agents}
        self.truncations = {a: False for a in self.agents}
        self.infos = {a: {} for a in self.agents}
        self._turn, self._skip_agent_selection = 0, None
        self.agent_selection = self._order[0]

    def _turn_order(self) -> list[str]:
        """"bs" and then the active UE slots in slot order."""
        slots = np.flatnonzero(self._leader_obs.active[0])
        return [LEADER] + [self.possible_agents[1 + i] for i in slots]

    def _pending_follower_obs(self, feedback: np.ndarray) -> FollowerObs:
        """The UEs' view before this TTI's DCM: what step_leader will show, with d_i,t = 0."""
        sim, lead = self.game.sim, self._leader_obs
        return FollowerObs(
            t=lead.t, active=lead.active, buffer_dpdus=sim.buffers.count.copy(),
            buffer_bits=sim.buffers.bits, channel=sim.channel.state.copy(),
            dcm_bits=np.zeros(feedback.shape, dtype=bool), feedback=feedback, last_ucm=lead.ucm)

    # ---------------------------------------------------------------------------------- step
    def _slot(self, agent: str) -> int:
        return self.possible_agents.index(agent) - 1

    def observe(self, agent: str) -> dict[str, Any]:
        if agent == LEADER:
            return leader_dict(self._leader_obs)
        return follower_dict(self._follower_obs, self._slot(agent))

    def step(self, action: Any) -> None:
        agent = self.agent_selection
        if self.terminations[agent] or self.truncations[agent]:
            self._was_dead_step(action)
            return
        self._cumulative_rewards[agent] = 0.0
        self._clear_rewards()
        if agent == LEADER:
            self._act_leader(action)
        else:
            self._bitmap[0, self._slot(agent)] = np.asarray(action["bitmap"], dtype=np.int8)
            self._ucm[0, self._slot(agent)] = int(action["ucm"])
        self._turn += 1
        if self._turn == len(self._order):
            self._execute_tti()
        self.agent_selection = self._order[self._turn]
        self._accumulate_rewards()
        self._deads_step_first()

    def _act_leader(self, action: Any) -> None:
        dcm = np.asarray(action, dtype=np.int64).reshape(1, -1)  # (1, N)
        dcm = np.where(dcm > self._leader_obs.n_active[0], 0, dcm)  # out of range = nobody
        self._follower_obs = self.game.step_leader(dcm)
        self._bitmap = np.zeros((1, self.game.max_ues, self.game.n_rbgs), dtype=np.int8)
        self._ucm = np.zeros((1, self.game.max_ues), dtype=np.int64)

    def _execute_tti(self) -> None:
        """Run the TTI, hand out rewards, then truncate (time limit) or apply churn."""
        step = self.last_step = self.game.step_followers(self._bitmap, self._ucm)
        self.rewards[LEADER] = float(step.leader_reward[0])
        for agent in self._order[1:]:
            self.rewards[agent] = float(step.follower_reward[0, self._slot(agent)])
        self._leader_obs = self.game.leader_obs() if step.done else step.leader_obs
        self._follower_obs = self._pending_follower_obs(step.report.feedback.copy())
        self._turn = 0
        if step.done:
            self.truncations = {a: True for a in self.agents}
            return
        self._order = self._turn_order()
        for agent in self.agents:
            self.terminations[agent] = agent not in self._order  # left after this TTI
        for agent in self._order:
            if agent not in self.agents:  # joined after this TTI
                self.agents.append(agent)
                self.rewards[agent] = self._cumulative_rewards[agent] = 0.0
                self.terminations[agent] = self.truncations[agent] = False
                self.infos[agent] = {}
        self.agents.sort(key=self.possible_agents.index)

    # -------------------------------------------------------------------------------- render
    def render(self) -> str | None:
        """"ansi": one line with the last executed TTI's t, DCM and the active UEs' bitmaps."""
        if self.render_mode is None:
            gymnasium.logger.warn("render() called without a render_mode; pass render_mode='ansi'")
            return None
        if self.last_step is None:
            return f"t={self._leader_obs.t} (no TTI executed yet)"
        step = self.last_step
        bitmaps = [f"ue_{i}={''.join(str(int(b)) for b in step.bitmap[0, i])}"
                   for i in np.flatnonzero(step.report.active[0])]
        return f"t={step.report.t} dcm={' '.join(map(str, step.dcm[0]))} " + " ".join(bitmaps)

    def close(self) -> None:
        pass


raw_env = UplinkAECEnv


def env(**kwargs: Any) -> AECEnv:
    """:class:`UplinkAECEnv` in PettingZoo's standard wrappers (actions in bounds, call order)."""
    environment = wrappers.AssertOutOfBoundsWrapper(UplinkAECEnv(**kwargs))
    return wrappers.OrderEnforcingWrapper(environment)


class PolicyAgents:
    """A textgame leader/follower pair as the agents of :class:`UplinkAECEnv`.

    ``action = agents(env, agent)`` for the agent whose turn it is. The leader acts on the bs's
    :class:`LeaderObs`; at the first UE turn of a TTI the follower policy acts once for every
    active UE (one batched call, as in :func:`textgame.runner.run_episodes`) and each UE's turn
    takes its row. Any policy pair plugs in this way: heuristics, MARL models, students and LLM
    adapters (:mod:`trainers.policy.scheduler`). The policies are reset at every episode's first
    TTI with a generator drawn from ``seed``.
    """

    def __init__(self, leader, follower, seed: int | None = None) -> None:
        self.leader, self.follower = leader, follower
        self.rng = np.random.default_rng(seed)
        self._actions: tuple[np.ndarray, np.ndarray] | None = None

    def __call__(self, env: AECEnv, agent: str) -> Any:
        base: UplinkAECEnv = env.unwrapped
        game = base.game
        if agent == LEADER:
            obs = base._leader_obs
            if obs.t == 0:
                self.leader.reset(1, game.max_ues, game.n_rbgs, self.rng)
                self.follower.reset(1, game.max_ues, game.n_rbgs, game.ucm_levels, self.rng)
            self._actions = None
            return self.leader.act(obs)[0]
        if self._actions is None:
            self._actions = self.follower.act(base._follower_obs)
        bitmap, ucm = self._actions
        slot = base._slot(agent)
        return {"bitmap": bitmap[0, slot].astype(np.int8), "ucm": int(ucm[0, slot])}
