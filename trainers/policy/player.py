"""Playing the text game with a :class:`~trainers.policy.models.StackelbergPolicy` (design §6,
Algorithm 1 lines 5-11): B games in lock step, batched LLM decisions.

Per TTI: one PAG-constrained generation for the leaders of all B envs, then one for the followers
of all envs (followers share the follower adapter). Each decision's :class:`Trace` row keeps what
PPO needs to replay its masks and recompute its log-prob: the prompt's token ids, the action
tokens, their grammar, the action log-prob and the value. :class:`GamePlayer` needs only a
:class:`~trainers.policy.play_config.PlayConfig`, so evaluation plays a saved policy with it;
training's :class:`~trainers.stackelberg.rollout.RolloutWorker` is a GamePlayer that also turns
the traces into PPO batches.

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
from trainers.policy.play_config import PlayConfig


@dataclass
class Trace:
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


def numeric_follower(play: PlayConfig, legacy_ues: int) -> FollowerPolicy | None:
    """The heuristic that plays some or all UEs, or None when the LLM plays every UE."""
    legacy = make_follower(play.legacy_policy) if legacy_ues else None
    if play.follower_policy == "llm":
        return legacy
    ues = make_follower(play.follower_policy)
    return ues if legacy is None else MixedFollower(ues, legacy, legacy_ues)


class GamePlayer:
    """Plays batches of B episodes of the text game with a policy and records its decisions.

    ``play``: how the policy plays (text layer, grammar, UEs, cell); ``n_envs``: B;
    ``legacy_ues``: the last this many active UEs of every env play ``play.legacy_policy``;
    ``prefix_cache``: reuse each meta-prompt's KV cache while acting; ``seed`` and
    ``process_index`` key :meth:`seeds`; ``render``: the chat template (trainers.policy.chat).
    """

    def __init__(self, policy, tokenizer, encoder, play: PlayConfig, *, n_envs: int,
                 legacy_ues: int = 0, prefix_cache: bool = True, seed: int = 0, render=None,
                 process_index: int = 0) -> None:
        self.policy, self.tokenizer, self.encoder = policy, tokenizer, encoder
        self.play_config, self.legacy_ues, self.seed = play, legacy_ues, seed
        self.process_index = process_index
        self.scenario = play.scenario_config()
        self.env = TextStackelbergEnv(self.scenario, n_envs, play.text_config(), render)
        cell = self.scenario.cell
        self.n_rbgs, self.ucm_levels = cell.n_rbgs, cell.ucm_levels
        self.decider = Decider(policy, tokenizer, pag_backend=play.pag_backend,
                               prefix_cache=prefix_cache, encoder=encoder)
        self.numeric_follower = numeric_follower(play, legacy_ues)

    def seeds(self, epoch: int, batch: int) -> tuple[int, int]:
        """(environment seed, sampling seed) of one batch of episodes."""
        key = np.random.SeedSequence([self.seed, epoch, batch, self.process_index])
        env_seed, sample_seed = key.generate_state(2)
        return int(env_seed), int(sample_seed)

    def _decide(self, role: str, prompts: list[str], n_ues: list[int], generator, temperature,
                trace: Trace, owners: list[int], tti: int) -> list[str]:
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
                trace: Trace, tti: int) -> tuple[list[str], np.ndarray]:
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
            if self.play_config.follower_policy != "llm":
                llm = llm[:0]
            else:
                legacy = legacy_mask(obs.active, self.legacy_ues)  # (B, I_max)
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
             ) -> tuple[Trace, Trace, dict]:
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
        leader, follower = (Trace(keep_trunk=keep_trunk, keep_hidden=keep_hidden)
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
