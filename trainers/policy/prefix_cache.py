"""Meta-prompt KV reuse while acting (SPEC §6 rollout): prefill each meta-prompt once per adapter.

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
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import DynamicCache

from trainers.policy.encoding import left_pad

_PAD = 0  # any id: padding is never attended to


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
                for layer in out.past_key_values.layers]

    @torch.no_grad()
    def split(self, model, role: str, stamp: tuple, input_ids: torch.Tensor,
              attention_mask: torch.Tensor, prefix_lengths: Sequence[int]):
        """``(suffix ids (B, S), suffix mask (B, S), prefix mask (B, Lp), DynamicCache)``.

        ``input_ids``/``attention_mask`` (B, P) are a left-padded batch, ``prefix_lengths`` (B,)
        the tokens of each row's meta-prompt (0 = none; at least the last prompt token always
        stays in the suffix). ``model`` must have ``role``'s adapter active, in eval mode.
        """
        self._check(role, stamp)
        host_ids, host_mask = input_ids.cpu(), attention_mask.cpu().bool()
        rows = [r[m].tolist() for r, m in zip(host_ids, host_mask, strict=True)]
        cut = [min(int(n), len(r) - 1) for n, r in zip(prefix_lengths, rows, strict=True)]
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
