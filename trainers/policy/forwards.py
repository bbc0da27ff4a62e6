"""The policy's forwards (design §6): PAG-constrained sampling for the rollout, the log-prob
logits and values of recorded actions for PPO, the KL reference, all on the frozen trunk's
states when the adapters sit on the top k layers (§6.10).

:class:`PolicyForwards` is a mixin of :class:`~trainers.policy.models.StackelbergPolicy`, which
holds the state it reads: ``peft_model``, ``value_heads``, ``role``, ``boundary``, ``trunk``,
``prefix_cache`` and the role switches ``set_role``/``use``/``_evaluating``.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from contextlib import contextmanager, nullcontext

import torch
from torch import nn

from grammars import ROLES
from trainers.cache_api import cache_kwargs
from trainers.pag.sampler import ActionGrammar, ActionSample, sample_constrained
from trainers.policy.encoding import left_pad
from trainers.policy.prefix_cache import (
    action_inputs,
    keep_cache_under_checkpointing,
    rows_and_cuts,
)
from trainers.policy.trunk import TrunkCapture, decoder_layers, run_layers, trunk_states


def reference_adapter(role: str) -> str:
    """The PEFT adapter holding ``role``'s frozen KL reference (``kl_reference: start``)."""
    return f"{role}_ref"


@contextmanager
def _last_prompt_hidden(decoder: nn.Module, index: int):
    """Yields a list that receives the decoder's final hidden state (B, H) at ``index``.

    A forward hook on the decoder (the backbone under ``lm_head``) keeps one position of the
    first call only (the prefill when sampling), so no path materialises every layer's states.
    """
    captured: list[torch.Tensor] = []

    def hook(module, args, output):
        if not captured:
            captured.append(output[0][:, index])

    handle = decoder.register_forward_hook(hook)
    try:
        yield captured
    finally:
        handle.remove()


class PolicyForwards:
    """Sampling, scoring and the KL reference of a :class:`StackelbergPolicy` (see the module
    docstring)."""

    def prompt_values_from_hidden(self, role: str, hidden: torch.Tensor) -> torch.Tensor:
        """(B,) fp32 values of ``role``'s head on final hidden states (B, H), autocast off."""
        with torch.autocast(hidden.device.type, enabled=False):
            return self.value_heads[role](hidden.float()).squeeze(-1)

    def _forward(self, input_ids, attention_mask, action_tokens, action_lengths,
                 prefix_lengths=None, trunk=None, vocab_ids=None):
        """Logits (B, T, V) fp32 and the last prompt token's final hidden state (B, H); with
        ``prefix_lengths`` each distinct meta-prompt runs once (:func:`action_inputs`); with
        ``trunk`` (each row's boundary states) only the layers above the trunk run; with
        ``vocab_ids`` (U,) the LM head scores those tokens only: logits (B, T, U)."""
        if (trunk is not None and self.boundary) or vocab_ids is not None:
            return self._forward_hidden(input_ids, attention_mask, action_tokens, action_lengths,
                                        prefix_lengths, trunk if self.boundary else None,
                                        vocab_ids)
        steps = action_tokens.shape[1]
        with keep_cache_under_checkpointing(self.peft_model, prefix_lengths is not None) as keeps:
            ids, mask, position, past, _ = action_inputs(
                self._decoder(), input_ids, attention_mask, action_tokens, action_lengths,
                prefix_lengths if keeps else None)
            with _last_prompt_hidden(self._decoder(), ids.shape[1] - steps - 1) as hidden:
                out = self.peft_model(input_ids=ids, attention_mask=mask, position_ids=position,
                                      use_cache=False, logits_to_keep=steps + 1,
                                      **cache_kwargs(self.peft_model, past))
        return out.logits[:, :steps].float(), hidden[0]  # (B, T, V): P-1+t predicts token t

    def _forward_hidden(self, input_ids, attention_mask, action_tokens, action_lengths,
                        prefix_lengths, trunk, vocab_ids):
        """:meth:`_forward` through the decoder itself: on the frozen trunk's states (layers
        [boundary, L) only) when ``trunk`` is given, the final norm, and the LM head on the T
        scored positions (and the ``vocab_ids`` tokens) only."""
        decoder, steps = self._decoder(), action_tokens.shape[1]
        window = slice(self.boundary if trunk is not None else 0, len(decoder_layers(decoder)))
        with keep_cache_under_checkpointing(self.peft_model, prefix_lengths is not None) as keeps:
            ids, mask, position, past, embeds = action_inputs(
                decoder, input_ids, attention_mask, action_tokens, action_lengths,
                prefix_lengths if keeps else None, trunk=trunk,
                boundary=window.start)
            inputs = {"input_ids": ids} if embeds is None else {"inputs_embeds": embeds}
            with run_layers(decoder, window):
                hidden = decoder(**inputs, attention_mask=mask, position_ids=position,
                                 use_cache=False, **cache_kwargs(decoder, past)).last_hidden_state
        logits = self._lm_head(hidden[:, -steps - 1:-1], vocab_ids)  # P-1+t predicts token t
        return logits.float(), hidden[:, -steps - 1]

    def _lm_head(self, hidden: torch.Tensor, vocab_ids: torch.Tensor | None) -> torch.Tensor:
        """Logits (..., V) of ``hidden`` (..., H), or (..., U) of the tokens ``vocab_ids``."""
        head = self.peft_model.get_base_model().get_output_embeddings()
        if vocab_ids is None:
            return head(hidden)
        bias = None if getattr(head, "bias", None) is None else head.bias[vocab_ids]
        return torch.nn.functional.linear(hidden, head.weight[vocab_ids], bias)

    @torch.no_grad()
    def trunk_rows(self, rows: Sequence[int | None], prompts: Sequence[Sequence[int]],
                   actions: Sequence[Sequence[int]]) -> list[torch.Tensor] | None:
        """Each decision's boundary states (P + n - 1, H) from :attr:`trunk` (ids of the
        rollout's ``trunk_out``), recomputed by one trunk forward for those it dropped; None
        without a frozen trunk."""
        if not self.boundary or not rows or any(r is None for r in rows):
            return None
        out = [self.trunk.full(r, self.device) for r in rows]
        missing = [k for k, t in enumerate(out) if t is None]
        if missing:
            ids, mask = left_pad([list(prompts[k]) + list(actions[k][:-1]) for k in missing],
                                 0, self.device)
            states = trunk_states(self._decoder(), self.boundary, ids, mask)
            for k, row, m in zip(missing, states, mask.sum(-1).tolist(), strict=True):
                out[k] = row[row.shape[0] - m:]
        return out

    def forward_actions(self, role: str, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                        action_tokens: torch.Tensor, action_lengths: torch.Tensor,
                        prefix_lengths: Sequence[int] | None = None,
                        trunk: list[torch.Tensor] | None = None,
                        vocab_ids: torch.Tensor | None = None,
                        ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(logits (B, T, V) fp32, values (B,) fp32)`` of ``role`` in one forward.

        ``input_ids``/``attention_mask`` (B, P) are the left-padded prompts, ``action_tokens``
        (B, T) the recorded actions (EOS-padded past ``action_lengths`` (B,)). ``logits[:, t]``
        predicts ``action_tokens[:, t]``; values come from the last prompt token. ``role`` stays
        active afterwards (see the module docstring); LoRA dropout follows train/eval mode.
        ``prefix_lengths`` (B,): each row's meta-prompt tokens, computed once per distinct
        meta-prompt (:func:`~trainers.policy.prefix_cache.action_inputs`); None = every row in
        full. ``trunk`` (B,) of (P_b + n_b - 1, H): the rows' frozen-trunk states
        (:meth:`trunk_rows`), on which only the top ``trainable_layers`` run (the same
        log-probs and values up to summation order); None = the whole model. ``vocab_ids``
        (U,) sorted token ids: the LM head scores those only, logits (B, T, U) - all a masked
        distribution needs when they hold every allowed token (eq. 13: the rest are -inf).
        """
        self.set_role(role)
        logits, hidden = self._forward(input_ids, attention_mask, action_tokens, action_lengths,
                                       prefix_lengths, trunk, vocab_ids)
        if logits.requires_grad and (
                self.peft_model.get_base_model().is_activation_checkpointing):
            for tensor in (logits, hidden):  # their grads come before any layer's recompute
                tensor.register_hook(functools.partial(self._check_role, role))
        return logits, self.prompt_values_from_hidden(role, hidden)

    def _check_role(self, role: str, grad: torch.Tensor) -> None:
        if self.role != role:
            raise RuntimeError(
                f"backward of forward_actions({role!r}) while the {self.role!r} adapter is "
                "active: gradient checkpointing would recompute the layers with the wrong "
                f"adapter; backpropagate before set_role/use({self.role!r})")

    @torch.no_grad()
    def reference_logits(self, role: str, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                         action_tokens: torch.Tensor, action_lengths: torch.Tensor,
                         prefix_lengths: Sequence[int] | None = None,
                         trunk: list[torch.Tensor] | None = None,
                         vocab_ids: torch.Tensor | None = None) -> torch.Tensor:
        """Logits (B, T, V) fp32 of ``role``'s KL reference: the base with every adapter
        disabled, the same model for both roles (or ``role``'s frozen copy after
        :meth:`freeze_reference`) (``role`` keeps call sites symmetric);
        ``prefix_lengths``, ``trunk`` and ``vocab_ids`` as in :meth:`forward_actions` (the trunk
        has no adapter: the same states serve the reference)."""
        if role not in ROLES:
            raise ValueError(f"role = {role!r} is invalid; allowed: one of {list(ROLES)}")
        inputs = (input_ids, attention_mask, action_tokens, action_lengths, prefix_lengths,
                  trunk, vocab_ids)
        try:
            if self.has_frozen_reference:  # kl_reference: start
                self.peft_model.set_adapter(reference_adapter(role))
                return self._forward(*inputs)[0]
            with self.peft_model.disable_adapter():
                return self._forward(*inputs)[0]
        finally:
            self.peft_model.set_adapter(self.role)
            self._all_adapters_trainable()  # re-enabling adapters freezes the inactive ones

    @torch.no_grad()
    def values(self, role: str, input_ids: torch.Tensor,
               attention_mask: torch.Tensor) -> torch.Tensor:
        """(B,) values of left-padded prompts under ``role`` (eval mode)."""
        with self._evaluating(), self.use(role), _last_prompt_hidden(self._decoder(), -1) as hidden:
            position = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
            self.peft_model(input_ids=input_ids, attention_mask=attention_mask,
                            position_ids=position, use_cache=False, logits_to_keep=1)
        return self.prompt_values_from_hidden(role, hidden[0])

    @torch.no_grad()
    def generate_actions(self, role: str, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                         grammars: Sequence[ActionGrammar], *, generator: torch.Generator,
                         temperature: float = 1.0, max_new_tokens: int | None = None,
                         greedy: bool = False, timings: dict | None = None,
                         prefix_lengths: Sequence[int] | None = None,
                         trunk_out: list | None = None, hidden_out: list | None = None,
                         ) -> tuple[ActionSample, torch.Tensor]:
        """PAG-constrained sampling with ``role``'s adapter (eval mode, restored afterwards)
        and the prompts' values (B,), read off the sampling prefill.

        ``prefix_lengths`` (B,): each row's meta-prompt tokens, whose KV states are reused from
        :attr:`prefix_cache`. ``trunk_out`` (a list; only with a frozen trunk) receives one
        :attr:`trunk` id per row: the boundary states the sampling computed, for the update;
        ``hidden_out`` (a list) the value heads' input (B, H), for fitting them
        (:mod:`trainers.stackelberg.critic`).
        """
        keep = trunk_out is not None and self.boundary > 0
        keys = [()] * len(input_ids)
        with self._evaluating(), self.use(role):
            past = past_mask = None
            if prefix_lengths is not None and any(prefix_lengths):
                if keep:
                    rows, cut = rows_and_cuts(input_ids, attention_mask, prefix_lengths)
                    keys = [tuple(r[:n]) for r, n in zip(rows, cut, strict=True)]
                input_ids, attention_mask, past_mask, past = self.prefix_cache.split(
                    self.peft_model, role, self.adapter_stamp(role), input_ids, attention_mask,
                    prefix_lengths)
            capture = TrunkCapture(self._decoder(), self.boundary) if keep else nullcontext()
            with _last_prompt_hidden(self._decoder(), -1) as hidden, capture:
                sample = sample_constrained(self.peft_model, input_ids, attention_mask, grammars,
                                            generator=generator, temperature=temperature,
                                            max_new_tokens=max_new_tokens, greedy=greedy,
                                            timings=timings,
                                            past_key_values=past, past_mask=past_mask)
        if keep:
            self._keep_prefixes(keys)
            trunk_out += [self.trunk.add(key, rest) for key, rest in
                          zip(keys, capture.rows(attention_mask, sample.lengths), strict=True)]
        if hidden_out is not None:
            hidden_out.append(hidden[0].detach().float())
        return sample, self.prompt_values_from_hidden(role, hidden[0])

    def _keep_prefixes(self, keys: Sequence[tuple[int, ...]]) -> None:
        """Trunk states of the meta-prompts not yet in :attr:`trunk`: one forward, once a run
        (the trunk has no adapter, so they hold for both roles and every epoch)."""
        missing = [k for k in dict.fromkeys(keys) if k and not self.trunk.has_prefix(k)]
        if not missing:
            return
        ids, mask = left_pad([list(k) for k in missing], 0, self.device)  # (m, Lp)
        states = trunk_states(self._decoder(), self.boundary, ids, mask)  # (m, Lp, H)
        for key, row in zip(missing, states, strict=True):
            self.trunk.add_prefix(key, row[row.shape[0] - len(key):].clone())
