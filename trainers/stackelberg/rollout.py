"""Rollout (design §6, Algorithm 1 lines 5-13): B text games in lock step, batched LLM decisions.

Per TTI: one PAG-constrained generation for the leaders of all B envs, then one for the followers
of all envs (followers share the follower adapter). Each decision keeps what PPO needs to replay
its masks and recompute its log-prob: the prompt's token ids, the action tokens, their grammar,
the sampling temperature, the action log-prob and the value. After each batch of episodes GAE
runs per env for the leader and per UE slot for the followers (:func:`trainers.ppo.gae`).

Seeds are a function of (seed, epoch, batch, process) only, so an epoch can be replayed exactly
after a resume without storing the environments' state.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from textgame.policies import FollowerPolicy, MixedFollower, legacy_mask, make_follower
from textgame.text_env import TextStackelbergEnv
from trainers.policy.decide import Decider
from trainers.ppo import gae
from trainers.stackelberg.config import StackelbergPPOConfig


@dataclass
class Decisions:
    """One role's decisions of an epoch, flattened; rows are decisions."""

    prompts: list[list[int]] = field(default_factory=list)  # prompt token ids, unpadded
    prefix_lengths: list[int] = field(default_factory=list)  # meta-prompt tokens (0: unknown)
    tokens: list[list[int]] = field(default_factory=list)  # action tokens incl. EOS
    grammars: list = field(default_factory=list)  # ActionGrammar of each decision
    logprobs: list[float] = field(default_factory=list)  # eq. 12 at sampling time
    values: list[float] = field(default_factory=list)
    advantages: list[float] = field(default_factory=list)
    returns: list[float] = field(default_factory=list)
    rewards: list[float] = field(default_factory=list)
    trunk_ids: list[int] = field(default_factory=list)  # policy.trunk ids (frozen trunk only)
    temperature: float = 1.0

    def __len__(self) -> int:
        return len(self.prompts)


@dataclass
class _Trace:
    """One role's per-TTI records of a batch of episodes, before GAE."""

    rows: list[tuple[int, int]] = field(default_factory=list)  # (owner, tti) of each decision
    prompts: list[list[int]] = field(default_factory=list)
    prefix_lengths: list[int] = field(default_factory=list)
    tokens: list[list[int]] = field(default_factory=list)
    grammars: list = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    values: list[float] = field(default_factory=list)
    rewards: list[float] = field(default_factory=list)
    trunk_ids: list[int] = field(default_factory=list)  # policy.trunk ids, when keep_trunk
    hiddens: list = field(default_factory=list)  # (b, H) value-head inputs, when keep_hidden
    keep_trunk: bool = False
    keep_hidden: bool = False


def _unpad(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> list[list[int]]:
    return [row[mask.bool()].tolist() for row, mask in zip(input_ids.cpu(), attention_mask.cpu(),
                                                           strict=True)]


def _numeric_follower(config: StackelbergPPOConfig) -> FollowerPolicy | None:
    """The heuristic that plays some or all UEs, or None when the LLM plays every UE."""
    legacy = make_follower(config.legacy_policy) if config.legacy_ues else None
    if config.follower_policy == "llm":
        return legacy
    ues = make_follower(config.follower_policy)
    return ues if legacy is None else MixedFollower(ues, legacy, config.legacy_ues)


class RolloutWorker:
    """Plays episodes of the text game with a :class:`StackelbergPolicy` and records decisions."""

    def __init__(self, policy, tokenizer, encoder, config: StackelbergPPOConfig,
                 render=None, process_index: int = 0) -> None:
        self.policy, self.tokenizer, self.encoder, self.config = policy, tokenizer, encoder, config
        self.process_index = process_index
        self.scenario = config.scenario_config()
        self.env = TextStackelbergEnv(self.scenario, config.n_envs, config.text_config(), render)
        cell = self.scenario.cell
        self.n_rbgs, self.ucm_levels = cell.n_rbgs, cell.ucm_levels
        self.decider = Decider(policy, tokenizer, pag_backend=config.pag_backend,
                               prefix_cache=config.prefix_cache, encoder=encoder)
        self.numeric_follower = _numeric_follower(config)

    def seeds(self, epoch: int, batch: int) -> tuple[int, int]:
        """(environment seed, sampling seed) of one batch of episodes."""
        key = np.random.SeedSequence([self.config.seed, epoch, batch, self.process_index])
        env_seed, sample_seed = key.generate_state(2)
        return int(env_seed), int(sample_seed)

    def _decide(self, role: str, prompts: list[str], n_ues: list[int], generator, temperature,
                trace: _Trace, owners: list[int], tti: int) -> list[str]:
        out = self.decider.decide(role, prompts, n_ues, self.env.builder, generator=generator,
                                  temperature=temperature,
                                  trunk_out=trace.trunk_ids if trace.keep_trunk else None,
                                  hidden_out=trace.hiddens if trace.keep_hidden else None)
        sample = out.sample
        lengths = sample.lengths.tolist()
        trace.prompts += _unpad(out.input_ids, out.attention_mask)
        trace.prefix_lengths += out.prefix_lengths or [0] * len(prompts)
        trace.tokens += [row[:n] for row, n in zip(sample.tokens.tolist(), lengths, strict=True)]
        trace.grammars += out.grammars
        trace.logprobs += sample.action_logprob.float().tolist()
        trace.values += out.values.float().tolist()
        trace.rows += [(owner, tti) for owner in owners]
        return sample.texts

    def _follow(self, prompts: list[str], n_active: np.ndarray, generator, temperature,
                trace: _Trace, tti: int) -> tuple[list[str], np.ndarray]:
        """Follower texts in ``follower_slots`` order and the indices the LLM answered.

        UEs that a heuristic plays (all of them for ``follower_policy != 'llm'``, the legacy UEs
        otherwise) answer with the heuristic's action as text; the rest are one LLM batch.
        """
        env, i_max = self.env, self.scenario.cell.max_ues
        slots = env.follower_slots
        texts: list[str] = [""] * len(slots)
        llm = np.arange(len(slots))
        if self.numeric_follower is not None:
            obs = env.follower_obs
            texts = env.follower_texts(*self.numeric_follower.act(obs))
            if self.config.follower_policy != "llm":
                llm = llm[:0]
            else:
                legacy = legacy_mask(obs.active, self.config.legacy_ues)  # (B, I_max)
                llm = np.array([k for k, (b, i) in enumerate(slots) if not legacy[b, i]],
                               dtype=np.int64)
        if llm.size:
            rows = [slots[k] for k in llm]
            answers = self._decide("follower", [prompts[k] for k in llm],
                                   [int(n_active[b]) for b, _ in rows],
                                   generator, temperature, trace,
                                   [b * i_max + i for b, i in rows], tti)
            for k, text in zip(llm, answers, strict=True):
                texts[k] = text
        return texts, llm

    def play(self, epoch: int, batch: int, temperature: float, seeds: tuple | None = None,
             keep_trunk: bool = False, keep_hidden: bool = False,
             ) -> tuple[_Trace, _Trace, dict]:
        """One batch of B episodes: (leader trace, follower trace, episode KPIs).

        ``seeds`` = (environment seed, sampling seed) overrides :meth:`seeds` (evaluation plays
        the environments of :func:`textgame.runner.batch_seeds`). ``keep_trunk``: keep every
        decision's frozen-trunk states in ``policy.trunk`` for the update (training only);
        ``keep_hidden``: every decision's value-head input in the traces' ``hiddens``.
        """
        env_seed, sample_seed = seeds or self.seeds(epoch, batch)
        generator = torch.Generator(self.policy.device).manual_seed(sample_seed)
        env, cell = self.env, self.scenario.cell
        if self.numeric_follower is not None:
            self.numeric_follower.reset(env.n_envs, cell.max_ues, cell.n_rbgs, cell.ucm_levels,
                                        np.random.default_rng(sample_seed))
        leader, follower = (_Trace(keep_trunk=keep_trunk, keep_hidden=keep_hidden)
                            for _ in range(2))
        prompts = env.reset(seed=env_seed)
        for tti in range(self.scenario.cell.episode_ttis):
            n_active = env.game.sim.active.sum(axis=1)
            texts = self._decide("leader", prompts, [int(n) for n in n_active], generator,
                                 temperature, leader, list(range(env.n_envs)), tti)
            prompts = env.step_leader(texts)
            texts, llm = self._follow(prompts, n_active, generator, temperature, follower, tti)
            step = env.step_followers(texts)
            leader.rewards += step.leader_rewards.tolist()
            follower.rewards += step.follower_rewards[llm].tolist()
            prompts = step.leader_prompts
        return leader, follower, step.info["kpis"]

    def advantages(self, trace: _Trace, owners: int, monte_carlo: bool = False,
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
                d = out[role]
                d.prompts += trace.prompts
                d.prefix_lengths += trace.prefix_lengths
                d.tokens += trace.tokens
                d.grammars += trace.grammars
                d.logprobs += trace.logprobs
                d.values += trace.values
                d.rewards += trace.rewards
                d.advantages += advantages
                d.returns += returns
                d.trunk_ids += trace.trunk_ids
        return out["leader"], out["follower"], kpis
