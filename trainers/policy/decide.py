"""One place decides LLM actions (design §6): prompts in, one PAG-constrained batch out.

The rollout (:mod:`trainers.stackelberg.rollout`), the scheduler wrapper
(:mod:`trainers.policy.scheduler`) and the expert-agreement play
(:mod:`trainers.stackelberg.agreement`) all call :meth:`Decider.decide`, so the grammar of every
row (role, its I, N, K), the token ids (:class:`~trainers.policy.encoding.PromptEncoder`), the
meta-prompt lengths that the prefix cache reuses and the frozen trunk's kept states are made the
same way wherever a policy plays: evaluation plays exactly what the trainer trained.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from trainers.pag.sampler import ActionGrammar, ActionSample, compile_action_grammar
from trainers.policy.encoding import PromptEncoder, meta_prompt_lines


@dataclass
class DecisionBatch:
    """One batch of decisions: the sample, the prompts' values and what PPO replays."""

    sample: ActionSample
    grammars: list[ActionGrammar]  # (B,) each row's PAG
    values: torch.Tensor  # (B,) fp32
    input_ids: torch.Tensor  # (B, P) left-padded prompt ids
    attention_mask: torch.Tensor  # (B, P)
    prefix_lengths: list[int] | None  # (B,) meta-prompt tokens (None: unknown to the encoder)


class Decider:
    """PAG-constrained decisions of a :class:`~trainers.policy.models.StackelbergPolicy`.

    ``pag_backend``: the grammars' backend; ``prefix_cache``: reuse the meta-prompts' KV states
    (the same actions, fewer tokens run).
    """

    def __init__(self, policy, tokenizer, *, pag_backend: str = "llguidance",
                 prefix_cache: bool = True, encoder: PromptEncoder | None = None) -> None:
        self.policy, self.tokenizer = policy, tokenizer
        self.pag_backend, self.prefix_cache = pag_backend, prefix_cache
        self.encoder = encoder or PromptEncoder(tokenizer)

    def grammars(self, role: str, n_ues: Sequence[int], n_rbgs: int,
                 ucm_levels: int) -> list[ActionGrammar]:
        """The PAG of each row (compiled once per (role, I, N, K) and cached)."""
        return [compile_action_grammar(self.tokenizer, role, int(n), n_rbgs, ucm_levels,
                                       self.pag_backend, self.policy.vocab_size) for n in n_ues]

    def decide(self, role: str, prompts: list[str], n_ues: Sequence[int], builder, *,
               generator: torch.Generator, temperature: float = 1.0, greedy: bool = False,
               trunk_out: list | None = None, hidden_out: list | None = None) -> DecisionBatch:
        """``role``'s actions for ``prompts`` (rendered by ``builder``, a
        :class:`textgame.prompts.PromptBuilder`) of cells with ``n_ues`` active UEs each.
        ``trunk_out`` and ``hidden_out`` as in
        :meth:`~trainers.policy.models.StackelbergPolicy.generate_actions`.
        """
        grammars = self.grammars(role, n_ues, builder.n_rbgs, builder.max_ucm + 1)
        input_ids, attention_mask = self.encoder(prompts, self.policy.device)
        template = getattr(builder, f"{role}_template")
        prefix = self.encoder.prefix_lengths(prompts, meta_prompt_lines(builder.render, template))
        sample, values = self.policy.generate_actions(
            role, input_ids, attention_mask, grammars, generator=generator,
            temperature=temperature, greedy=greedy,
            prefix_lengths=prefix if self.prefix_cache else None, trunk_out=trunk_out,
            hidden_out=hidden_out)
        return DecisionBatch(sample, grammars, values, input_ids, attention_mask, prefix)
