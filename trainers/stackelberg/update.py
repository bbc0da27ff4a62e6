"""PPO update of one role (design §6, Algorithm 1 lines 16-21) over an epoch's decisions.

Each minibatch replays the PAG masks of its decisions from their tokens
(:func:`trainers.pag.sampler.replay_masks`), recomputes the action log-probs at the sampling
temperature with the role's adapter (eq. 12), the masked entropy and the KL to the reference
(adapters off), and takes one optimizer step on the role's parameters only. With several
processes the role's gradients are averaged across processes before the step, so adapters
stay identical; every process runs the same number of minibatches (the maximum over processes).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch.nn.utils.rnn import pad_sequence

from trainers.pag.sampler import replay_masks
from trainers.policy.encoding import left_pad
from trainers.ppo import (
    explained_variance,
    kl_to_reference,
    masked_entropy,
    ppo_losses,
    token_logprobs,
)
from trainers.stackelberg.rollout import Decisions


def _right_pad(rows: list[list[int]], pad: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)  # (b, T)
    for i, r in enumerate(rows):
        ids[i, :len(r)] = torch.tensor(r)
    return ids.to(device), torch.tensor([len(r) for r in rows], device=device)  # (b,)


def minibatch_count(n: int, size: int, accelerator) -> int:
    """Minibatches per PPO pass, equal on every process."""
    local = torch.tensor([max(math.ceil(n / size), 1)], device=accelerator.device)
    return int(accelerator.gather(local).max())


def average_gradients(params: list[torch.nn.Parameter], accelerator) -> None:
    """Mean of each parameter's gradient over processes, in one flattened all-reduce."""
    if accelerator.num_processes == 1:
        return
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])
    flat = accelerator.reduce(flat, reduction="mean")
    offset = 0
    for p, g in zip(params, grads, strict=True):
        p.grad = flat[offset:offset + g.numel()].view_as(g).to(g.dtype)
        offset += g.numel()


def allowed_vocab(masks: torch.Tensor, tokens: torch.Tensor
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The tokens any position of a minibatch allows, ``(ids (U,), masks (b, T, U), tokens
    (b, T) as indices into ids)``: the masked distributions (eq. 13) over V and over these U
    are the same, so the LM head needs only U of its V rows (U is tens, V tens of thousands)."""
    ids = masks.flatten(0, -2).any(0).nonzero().squeeze(-1)  # (U,) sorted
    return ids, masks[..., ids], torch.searchsorted(ids, tokens)


def reference_logprobs(policy, role: str, d: Decisions, rows: np.ndarray, input_ids,
                       attention_mask, tokens, lengths, masks, cache: dict | None,
                       prefix: list[int] | None = None,
                       trunk: list[torch.Tensor] | None = None,
                       vocab: tuple | None = None) -> torch.Tensor:
    """(b, T) masked token log-probs of the decisions under the reference (adapters off).

    The reference and the decisions are fixed for the whole update, so with ``cache`` (decision
    -> its log-probs) each decision's reference forward runs once, not once per PPO pass.
    ``prefix``: the rows' meta-prompt lengths, shared as in the policy forward (or None);
    ``trunk``: the rows' frozen-trunk states, as there; ``vocab``: :func:`allowed_vocab`'s
    ``(ids, masks, tokens)`` of the rows (``masks``/``tokens`` then over U, not V).
    """
    new = [k for k, i in enumerate(rows) if cache is None or int(i) not in cache]
    sizes = lengths.tolist()  # one transfer
    if new:
        pick = torch.tensor(new, device=input_ids.device)
        vocab_ids, scored_masks, scored_tokens = vocab or (None, masks, tokens)
        ref_logits = policy.reference_logits(role, input_ids[pick], attention_mask[pick],
                                             tokens[pick], lengths[pick],
                                             None if prefix is None else [prefix[k] for k in new],
                                             None if trunk is None else [trunk[k] for k in new],
                                             vocab_ids)
        ref = token_logprobs(ref_logits, scored_masks[pick], scored_tokens[pick],
                             d.temperature)  # (n, T)
        if cache is None:
            return ref
        for k, row in zip(new, ref, strict=True):
            cache[int(rows[k])] = row[:sizes[k]]
    out = pad_sequence([cache[int(i)] for i in rows], batch_first=True)  # (b, max length)
    return F.pad(out.float(), (0, tokens.shape[1] - out.shape[1]))  # (b, T), zeros after


def shared_prefixes(d: Decisions, rows: np.ndarray, config) -> list[int] | None:
    """The rows' meta-prompt lengths when the update shares them (``shared_prefix_update``)."""
    if not config.shared_prefix_update or len(d.prefix_lengths) != len(d):
        return None
    return [d.prefix_lengths[i] for i in rows]


def pass_minibatches(d: Decisions, count: int, config,
                     rng: np.random.Generator) -> list[np.ndarray]:
    """One PPO pass's ``count`` minibatches (decision indices) from a shuffle of ``d``.

    With ``group_by_prefix`` the shuffle is sorted (stably: ties stay shuffled) by meta-prompt
    and prompt length, cut, and the minibatches are drawn in random order, so each holds few
    distinct meta-prompts and little padding, as transformers' ``group_by_length``.
    """
    order = rng.permutation(len(d))
    if not config.group_by_prefix:
        return np.array_split(order, count)
    shared = len(d.prefix_lengths) == len(d)

    def key(i: int) -> tuple:
        head = tuple(d.prompts[i][:d.prefix_lengths[i]]) if shared else ()
        return head, len(d.prompts[i])

    parts = np.array_split(np.array(sorted(order, key=key), dtype=np.int64), count)
    return [parts[k] for k in rng.permutation(count)]


def minibatch_losses(policy, role: str, d: Decisions, rows: np.ndarray, config,
                     eos: int, pad: int, ref_cache: dict | None = None) -> dict[str, torch.Tensor]:
    """Eqs. 10 and 12-13 for the decisions ``rows`` of ``d``: losses and diagnostics
    (``ref_cache``: see :func:`reference_logprobs`)."""
    device = policy.device
    input_ids, attention_mask = left_pad([d.prompts[i] for i in rows], pad, device)
    tokens, lengths = _right_pad([d.tokens[i] for i in rows], eos, device)
    masks = replay_masks([d.grammars[i] for i in rows], tokens, lengths)  # (b, T, V)
    valid = torch.arange(tokens.shape[1], device=device)[None, :] < lengths[:, None]  # (b, T)
    prefix = shared_prefixes(d, rows, config)
    trunk = policy.trunk_rows([d.trunk_ids[i] for i in rows], [d.prompts[i] for i in rows],
                              [d.tokens[i] for i in rows]) if d.trunk_ids else None
    vocab = allowed_vocab(masks, tokens) if config.allowed_vocab_head else None
    vocab_ids, scored_masks, scored_tokens = vocab or (None, masks, tokens)
    logits, values = policy.forward_actions(role, input_ids, attention_mask, tokens, lengths,
                                            prefix, trunk, vocab_ids)  # (b, T, U or V)
    token_logp = token_logprobs(logits, scored_masks, scored_tokens, d.temperature) * valid
    entropy = (masked_entropy(logits, scored_masks, d.temperature) * valid).sum(-1)  # (b,)
    if config.kl_coef > 0:
        ref_logp = reference_logprobs(policy, role, d, rows, input_ids, attention_mask, tokens,
                                      lengths, masks, ref_cache, prefix, trunk, vocab)
        kl = kl_to_reference(token_logp, ref_logp, valid)  # (b,)
    else:
        kl = torch.zeros(len(rows), device=device)
    as_tensor = lambda x: torch.tensor([x[i] for i in rows], device=device)  # noqa: E731
    return ppo_losses(token_logp.sum(-1), as_tensor(d.logprobs), as_tensor(d.advantages),
                      values.float(), as_tensor(d.values), as_tensor(d.returns), entropy, kl,
                      config)


def ppo_update(policy, role: str, d: Decisions, optimizer, config, accelerator,
               rng: np.random.Generator, eos: int, pad: int) -> dict[str, float]:
    """K passes of minibatch PPO on one role; returns the epoch's mean diagnostics."""
    policy.ppo_mode()  # no dropout: the first pass recomputes the sampling log-probs exactly
    params = policy.role_parameters(role)
    n = len(d)
    if n == 0 and accelerator.num_processes == 1:  # e.g. every UE of the batch was legacy
        return {"decisions": 0.0}
    count = minibatch_count(n, config.minibatch_size, accelerator)
    totals: dict[str, float] = {}
    steps = 0
    ref_cache: dict[int, torch.Tensor] = {}  # decision -> reference token log-probs
    for _ in range(config.ppo_epochs(role)):
        parts = pass_minibatches(d, count, config, rng)
        first = np.concatenate(parts)[:1]
        for k, rows in enumerate(parts):
            empty = rows.size == 0  # fewer decisions here than minibatches elsewhere:
            rows = first if empty else rows  # still join the gradient all-reduce, with 0
            with accelerator.autocast():
                out = minibatch_losses(policy, role, d, rows, config, eos, pad, ref_cache)
            scale = 0.0 if empty else 1.0 / config.gradient_accumulation_steps
            accelerator.backward(out["loss"] * scale)
            if (k + 1) % config.gradient_accumulation_steps == 0 or k == count - 1:
                average_gradients(params, accelerator)
                # accelerate's clip unscales fp16 gradients first; the prepared optimizer steps
                # through the GradScaler (skipping a step with inf/NaN gradients) and updates it
                grad_norm = accelerator.clip_grad_norm_(params, config.max_grad_norm)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                totals["grad_norm"] = totals.get("grad_norm", 0.0) + float(grad_norm)
                steps += 1
            for key, value in out.items():
                totals[key] = totals.get(key, 0.0) + float(value.detach())
    passes = config.ppo_epochs(role) * count
    metrics = {k: v / (steps if k == "grad_norm" else passes) for k, v in totals.items()}
    metrics["explained_variance"] = explained_variance(torch.tensor(d.values),
                                                       torch.tensor(d.returns))
    metrics["decisions"] = float(n)
    return metrics
