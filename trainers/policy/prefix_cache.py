"""Meta-prompt KV reuse while acting (design §6 rollout): prefill each meta-prompt once per adapter.

Every prompt starts with its role's meta-prompt (the task description; it varies only with I, N,
K and the UE's number), which is most of a prompt's tokens. :class:`PrefixCache` keeps the
key/value states of each distinct meta-prompt token prefix per role and builds, for a left-padded
prompt batch, a KV cache of the rows' prefixes plus the remaining (suffix) tokens:

    cache columns   [ pad .. prefix_b ]  [ pad .. suffix_b ]  + decoded tokens
                     width Lp, left-padded  width S, left-padded

Position ids count real tokens only (``cumsum(mask) - 1``), so every token keeps the position it
has in the plain layout, and each query attends to exactly the keys it attends to there (padding
is masked out): the same logits up to floating-point summation order. The states depend on the
adapter weights: entries of a role are dropped when its stamp (the adapter parameters' storage
and in-place version counters, which every optimizer step and ``load_state_dict`` bump) changes.

The PPO update shares the meta-prompts the same way, with gradients (:func:`split_prefixes`,
:func:`prefix_states`): per minibatch, one forward of its m distinct meta-prompts records their
states, and every row's suffix (observation + action tokens) attends to its own prefix's states
gathered per row. Both caches there are :class:`_PrefixLayer` s, which are never grown, so a
layer that gradient checkpointing recomputes sees exactly what it saw the first time.

Forwards pass their KV cache under whichever name the model declares
(:func:`trainers.cache_api.cache_kwargs`, :func:`~trainers.cache_api.output_cache`).
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from transformers import DynamicCache
from transformers.cache_utils import Cache, DynamicLayer

from trainers.cache_api import cache_kwargs, output_cache
from trainers.policy.encoding import left_pad
from trainers.policy.trunk import run_layers

_PAD = 0  # any id: padding is never attended to


def rows_and_cuts(input_ids: torch.Tensor, attention_mask: torch.Tensor,
                   prefix_lengths: Sequence[int]) -> tuple[list[list[int]], list[int]]:
    """Each row's real token ids and its prefix length, at most all but its last token."""
    host_ids, host_mask = input_ids.cpu(), attention_mask.cpu().bool()
    rows = [r[m].tolist() for r, m in zip(host_ids, host_mask, strict=True)]
    cut = [min(int(n), len(r) - 1) for n, r in zip(prefix_lengths, rows, strict=True)]
    return rows, cut


class PrefixCache:
    """KV states of meta-prompt prefixes, per (role, prefix token ids); see the module docstring."""

    def __init__(self, max_entries: int = 256) -> None:
        self.max_entries = max_entries
        self._entries: dict[tuple[str, tuple[int, ...]], list[tuple[torch.Tensor, ...]]] = {}
        self._stamps: dict[str, tuple] = {}
        self.hits = self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    def invalidate(self, role: str | None = None) -> None:
        """Drop the entries of ``role`` (every role when None)."""
        self._entries = {k: v for k, v in self._entries.items()
                         if role is not None and k[0] != role}
        if role is None:
            self._stamps.clear()
        else:
            self._stamps.pop(role, None)

    def _check(self, role: str, stamp: tuple) -> None:
        if self._stamps.get(role) != stamp:
            self.invalidate(role)
            self._stamps[role] = stamp
        if len(self._entries) > self.max_entries:
            self.invalidate()
            self._stamps[role] = stamp

    @torch.no_grad()
    def _fill(self, model, role: str, prefixes: list[tuple[int, ...]]) -> None:
        """One batched prefill of the missing ``prefixes``; keeps each one's real columns."""
        ids, mask = left_pad([list(p) for p in prefixes], _PAD, model.device)  # (m, L)
        position = (mask.cumsum(-1) - 1).clamp(min=0)
        out = model(input_ids=ids, attention_mask=mask, position_ids=position, use_cache=True,
                    logits_to_keep=1)
        width = ids.shape[1]
        for i, prefix in enumerate(prefixes):
            start = width - len(prefix)
            self._entries[role, prefix] = [
                (layer.keys[i:i + 1, :, start:].clone(), layer.values[i:i + 1, :, start:].clone())
                for layer in output_cache(out).layers]

    @torch.no_grad()
    def split(self, model, role: str, stamp: tuple, input_ids: torch.Tensor,
              attention_mask: torch.Tensor, prefix_lengths: Sequence[int]):
        """``(suffix ids (B, S), suffix mask (B, S), prefix mask (B, Lp), DynamicCache)``.

        ``input_ids``/``attention_mask`` (B, P) are a left-padded batch, ``prefix_lengths`` (B,)
        the tokens of each row's meta-prompt (0 = none; at least the last prompt token always
        stays in the suffix). ``model`` must have ``role``'s adapter active, in eval mode.
        """
        self._check(role, stamp)
        rows, cut = rows_and_cuts(input_ids, attention_mask, prefix_lengths)
        keys = [tuple(r[:n]) for r, n in zip(rows, cut, strict=True)]
        missing = list(dict.fromkeys(k for k in keys if k and (role, k) not in self._entries))
        self.misses += len(missing)
        self.hits += sum(1 for k in set(keys) if k) - len(missing)
        if missing:
            self._fill(model, role, missing)
        device = input_ids.device
        suffix_ids, suffix_mask = left_pad([r[n:] for r, n in zip(rows, cut, strict=True)],
                                           _PAD, device)
        width = max(cut)
        prefix_mask = torch.zeros((len(rows), width), dtype=torch.long)  # (B, Lp)
        for b, n in enumerate(cut):
            prefix_mask[b, width - n:] = 1
        groups: dict[tuple[int, ...], list[int]] = {}
        for b, k in enumerate(keys):
            groups.setdefault(k, []).append(b)
        index = {k: torch.tensor(members, device=device) for k, members in groups.items() if k}
        layers = []
        first = self._entries[role, next(k for k in keys if k)] if width else None
        for layer in range(len(first) if first else 0):
            keys_values = []
            for which in (0, 1):  # keys, values: (B, H, Lp, D)
                like = first[layer][which]
                if len(groups) == 1:  # one prefix for the whole batch: a view, no copy
                    full = like.expand(len(rows), -1, -1, -1)
                else:
                    full = like.new_zeros((len(rows), like.shape[1], width, like.shape[3]))
                    for k, rows_k in index.items():
                        full[rows_k, :, width - len(k):] = self._entries[role, k][layer][which]
                keys_values.append(full)
            layers.append(tuple(keys_values))
        config = getattr(model, "config", None)
        cache = DynamicCache(ddp_cache_data=layers, config=config) if layers else None
        return suffix_ids, suffix_mask, prefix_mask.to(device), cache


# --------------------------------------------------------------- shared prefixes with gradients
class _PrefixLayer(DynamicLayer):
    """One layer's cache that is never grown. ``keys``/``values`` None: the first forward
    records its states (a recompute records them again); else they are a fixed prefix
    (B, H, Lp, D) that every forward of the layer reads in front of its own states."""

    def __init__(self, keys: torch.Tensor | None = None, values: torch.Tensor | None = None):
        super().__init__()
        self.fixed = keys is not None
        self.keys, self.values, self.is_initialized = keys, values, self.fixed
        if self.fixed:
            self.device = keys.device

    def update(self, key_states, value_states, *args, **kwargs):
        if not self.fixed:  # record (overwrite): idempotent under recomputation
            self.keys, self.values, self.is_initialized = key_states, value_states, True
            return key_states, value_states
        return (torch.cat([self.keys, key_states], dim=-2),
                torch.cat([self.values, value_states], dim=-2))

    def get_seq_length(self) -> int:
        return self.keys.shape[-2] if self.fixed else 0


@dataclass
class PrefixSplit:
    """A left-padded prompt batch cut into its distinct meta-prompts and each row's rest."""

    prefix_ids: torch.Tensor  # (m, Lp) the distinct prefixes, left-padded
    prefix_mask: torch.Tensor  # (m, Lp)
    group: torch.Tensor  # (B,) long: each row's prefix
    suffix_ids: torch.Tensor  # (B, S) the rest of each prompt, left-padded
    suffix_mask: torch.Tensor  # (B, S)
    cuts: list[int]  # (B,) each row's prefix tokens
    first: list[int]  # (m,) a row of each distinct prefix


def split_prefixes(input_ids: torch.Tensor, attention_mask: torch.Tensor,
                   prefix_lengths: Sequence[int]) -> PrefixSplit | None:
    """The batch (B, P) cut after each row's ``prefix_lengths`` tokens (at least the last prompt
    token stays in the suffix); None when some row has no prefix (then nothing is shared)."""
    rows, cut = rows_and_cuts(input_ids, attention_mask, prefix_lengths)
    if min(cut) < 1:
        return None
    keys = [tuple(r[:n]) for r, n in zip(rows, cut, strict=True)]
    distinct = list(dict.fromkeys(keys))
    number = {k: i for i, k in enumerate(distinct)}
    device = input_ids.device
    prefix_ids, prefix_mask = left_pad([list(k) for k in distinct], _PAD, device)
    suffix_ids, suffix_mask = left_pad([r[n:] for r, n in zip(rows, cut, strict=True)], _PAD,
                                       device)
    group = torch.tensor([number[k] for k in keys], device=device)
    first = [keys.index(k) for k in distinct]
    return PrefixSplit(prefix_ids, prefix_mask, group, suffix_ids, suffix_mask, cut, first)


@contextmanager
def keep_cache_under_checkpointing(model, enabled: bool = True):
    """Let checkpointed layers keep the cache (transformers drops it unless a layer only reads
    it, as :class:`_PrefixLayer` s do); yields False where transformers has no such switch and
    layers checkpoint, and when not ``enabled``."""
    from transformers.modeling_layers import GradientCheckpointingLayer

    if not enabled:
        yield False
        return
    layers = [m for m in model.modules() if isinstance(m, GradientCheckpointingLayer)]
    if not hasattr(GradientCheckpointingLayer, "_can_checkpoint_with_cache"):
        yield not any(layer.gradient_checkpointing for layer in layers)
        return
    for layer in layers:
        layer._can_checkpoint_with_cache = True
    try:
        yield True
    finally:
        for layer in layers:
            del layer._can_checkpoint_with_cache  # back to the class's False


def prefix_states(decoder, split: PrefixSplit, embeds: torch.Tensor | None = None,
                  boundary: int = 0) -> Cache:
    """One forward of the m distinct prefixes through ``decoder`` (the backbone, with gradients
    when enabled), their key/value states gathered per row (B, H, Lp, D) as a read-only cache;
    gradients of every row reach its prefix's single computation through the gather.
    ``embeds`` (m, Lp, H): the prefixes' trunk states, run through layers [boundary, L) only
    (the trunk's cache slots alias the first top layer's, so its length reads the same)."""
    position = (split.prefix_mask.cumsum(-1) - 1).clamp(min=0)  # as in _fill
    n_layers = decoder.config.num_hidden_layers
    record = Cache(layers=[_PrefixLayer() for _ in range(n_layers)])
    inputs = dict(attention_mask=split.prefix_mask, position_ids=position, use_cache=False,
                  **cache_kwargs(decoder, record))
    if embeds is None:
        decoder(input_ids=split.prefix_ids, **inputs)
    else:
        with run_layers(decoder, slice(boundary, n_layers)):
            decoder(inputs_embeds=embeds, **inputs)
    top = [_PrefixLayer(gather_rows(layer.keys, split.group),
                        gather_rows(layer.values, split.group))
           for layer in record.layers[boundary:]]
    return Cache(layers=[top[0]] * boundary + top)


def gather_rows(states: torch.Tensor, group: torch.Tensor) -> torch.Tensor:
    """(B, ...) rows ``states[group[b]]`` of the m distinct prefixes' states (m, ...), a view
    when m = 1. ``index_select``, not ``states[group]``: the backward of advanced indexing sums
    the rows that share a prefix with parallel atomic adds on the CPU, in an order that varies
    from run to run at two threads or more; ``index_select``'s sums them in row order, so a run
    is the same bytes at any fixed thread count (design §6.11)."""
    if states.shape[0] == 1:
        return states.expand(len(group), *states.shape[1:])
    return states.index_select(0, group)


def _right_aligned(parts: list[torch.Tensor], width: int) -> torch.Tensor:
    """(B, width, H): each row's states (n_b, H) in its last n_b columns, zeros before."""
    out = parts[0].new_zeros((len(parts), width, parts[0].shape[-1]))
    for b, part in enumerate(parts):
        if len(part):
            out[b, width - len(part):] = part
    return out


def trunk_embeds(trunk: list[torch.Tensor], prompt_sizes: list[int], cuts: list[int],
                 width: int, steps: int) -> torch.Tensor:
    """(B, width + T, H) boundary states laid out as :func:`action_inputs`' ids: row b's
    prompt states after its ``cuts[b]`` prefix tokens right-aligned in the first ``width``
    columns, its action states (``trunk[b][P_b:]``, T columns at most) after them."""
    prompts = _right_aligned([t[c:p] for t, c, p in zip(trunk, cuts, prompt_sizes, strict=True)],
                             width)
    actions = prompts.new_zeros((len(trunk), steps, prompts.shape[-1]))  # (B, T, H)
    for b, (t, p) in enumerate(zip(trunk, prompt_sizes, strict=True)):
        actions[b, :len(t) - p] = t[p:p + steps]
    return torch.cat([prompts, actions], dim=1)


def action_inputs(decoder, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                  action_tokens: torch.Tensor, action_lengths: torch.Tensor,
                  prefix_lengths: Sequence[int] | None = None,
                  trunk: list[torch.Tensor] | None = None, boundary: int = 0):
    """``(ids (B, S + T), mask (B, Lp + S + T), position ids (B, S + T), cache or None,
    embeds (B, S + T, H) or None)``: the left-padded prompts (B, P) followed by the recorded
    actions (B, T), EOS past ``action_lengths`` and masked there. With ``prefix_lengths`` the
    prompts are cut (:func:`split_prefixes`), the prefixes' states computed once
    (:func:`prefix_states`) and the ids are the suffixes; without, S = P, Lp = 0 and no cache.
    Position ids count real tokens (as when sampling), so both give every token the same
    position and keys. ``trunk``: each row's boundary states (P_b + n_b - 1, H) of the frozen
    trunk (:mod:`trainers.policy.trunk`); then ``embeds`` are the states of the ids for the
    layers [boundary, L), and the prefixes' states run through those layers only.
    """
    split = None if prefix_lengths is None else split_prefixes(input_ids, attention_mask,
                                                               prefix_lengths)
    past, past_mask = None, attention_mask.new_zeros((len(input_ids), 0))  # (B, Lp)
    steps = action_tokens.shape[1]
    embeds = None
    if trunk is not None:
        sizes = attention_mask.sum(-1).tolist()
        cuts = split.cuts if split is not None else [0] * len(trunk)
        width = split.suffix_ids.shape[1] if split is not None else input_ids.shape[1]
        embeds = trunk_embeds(trunk, sizes, cuts, width, steps)
    if split is not None:
        prefixes = None if trunk is None else _right_aligned(
            [trunk[b][:split.cuts[b]] for b in split.first], split.prefix_ids.shape[1])
        past = prefix_states(decoder, split, prefixes, boundary)
        past_mask = split.prefix_mask[split.group]
        input_ids, attention_mask = split.suffix_ids, split.suffix_mask
    live = (torch.arange(steps, device=input_ids.device)
            < action_lengths.to(input_ids.device)[:, None])  # (B, T)
    ids = torch.cat([input_ids, action_tokens], dim=1)  # (B, S + T)
    mask = torch.cat([past_mask.long(), attention_mask.long(), live.long()], dim=1)
    position = (mask.cumsum(-1) - 1).clamp(min=0)[:, -ids.shape[1]:]  # (B, S + T)
    return ids, mask, position, past, embeds
