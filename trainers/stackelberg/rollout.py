"""Rollout (design §6, Algorithm 1 lines 5-13): an epoch's episodes as PPO batches.

:class:`RolloutWorker` plays batches of B episodes (:class:`~trainers.policy.player.GamePlayer`:
B text games in lock step, batched PAG-constrained LLM decisions, seeds a function of (seed,
epoch, batch, process) only), then runs GAE per env for the leader and per UE slot for the
followers (:func:`trainers.ppo.gae`) and gathers each role's :class:`Decisions`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from trainers.policy.player import GamePlayer, Trace
from trainers.ppo import gae
from trainers.stackelberg.config import StackelbergPPOConfig


@dataclass
class Decisions(Trace):
    """One role's decisions of an epoch: the traces of its batches of episodes, flattened,
    with each decision's GAE advantage and return and the epoch's sampling temperature."""

    advantages: list[float] = field(default_factory=list)
    returns: list[float] = field(default_factory=list)
    temperature: float = 1.0

    def __len__(self) -> int:
        return len(self.prompts)

    def add(self, trace: Trace, advantages: list[float], returns: list[float]) -> None:
        """Append one batch's trace (its list fields) and its advantages and returns."""
        for name, values in vars(trace).items():
            if isinstance(values, list):
                getattr(self, name).extend(values)
        self.advantages += advantages
        self.returns += returns


class RolloutWorker(GamePlayer):
    """A :class:`~trainers.policy.player.GamePlayer` of the training config that also turns its
    traces into the epoch's PPO batches (:meth:`collect`)."""

    def __init__(self, policy, tokenizer, encoder, config: StackelbergPPOConfig,
                 render=None, process_index: int = 0) -> None:
        super().__init__(policy, tokenizer, encoder, config.play_config(), n_envs=config.n_envs,
                         legacy_ues=config.legacy_ues, prefix_cache=config.prefix_cache,
                         seed=config.seed, render=render, process_index=process_index)
        self.config = config

    def advantages(self, trace: Trace, owners: int, monte_carlo: bool = False,
                   ) -> tuple[list[float], list[float]]:
        """GAE over TTIs per owner (env or UE slot); inactive TTIs skipped (trainers.ppo.gae).
        ``monte_carlo``: lambda = 1 and no values, so the returns are the discounted rewards to
        go of each trajectory (value targets that do not depend on the value head)."""
        ttis = self.scenario.cell.episode_ttis
        shape = (owners, ttis)
        rewards = torch.zeros(shape, dtype=torch.float64)
        values = torch.zeros(shape, dtype=torch.float64)
        active = torch.zeros(shape, dtype=torch.bool)
        owner, tti = (torch.tensor(x) for x in zip(*trace.rows, strict=True))
        rewards[owner, tti] = torch.tensor(trace.rewards, dtype=torch.float64)
        if not monte_carlo:
            values[owner, tti] = torch.tensor(trace.values, dtype=torch.float64)
        active[owner, tti] = True
        starts = active & ~torch.cat([torch.zeros(owners, 1, dtype=torch.bool),
                                      active[:, :-1]], dim=1)  # a slot that (re)joins
        advantages, returns = gae(rewards, values, gamma=self.config.gamma,
                                  lam=1.0 if monte_carlo else self.config.gae_lambda,
                                  active=active, starts=starts)
        return advantages[owner, tti].tolist(), returns[owner, tti].tolist()

    def collect(self, epoch: int) -> tuple[Decisions, Decisions, list[dict]]:
        """Algorithm 1 lines 5-13 for one epoch: E episodes in batches of B."""
        temperature = self.config.temperature(epoch)
        out = {role: Decisions(temperature=temperature) for role in ("leader", "follower")}
        kpis = []
        i_max = self.scenario.cell.max_ues
        self.policy.trunk.clear_rows()
        for batch in range(self.config.episodes_per_epoch // self.config.n_envs):
            leader, follower, episode_kpis = self.play(epoch, batch, temperature,
                                                       keep_trunk=self.policy.boundary > 0)
            kpis.append(episode_kpis)
            for role, trace, owners in (("leader", leader, self.env.n_envs),
                                        ("follower", follower, self.env.n_envs * i_max)):
                if not trace.rows:  # heuristic UEs only: nothing to learn for this role
                    continue
                advantages, returns = self.advantages(trace, owners)
                out[role].add(trace, advantages, returns)
        return out["leader"], out["follower"], kpis
