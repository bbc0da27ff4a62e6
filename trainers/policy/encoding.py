"""Prompt batches -> left-padded token ids, once per TTI for every leader and follower prompt.

:func:`encode_prompts` encodes every prompt in full. :class:`PromptEncoder` reuses the ids of
lines it has already seen: the meta-prompt, which is most of every prompt, and the recurring
observation lines. A prompt's ids are then its lines' ids (newline included) between the
tokenizer's special tokens. That equals encoding the whole prompt whenever a newline is a
pre-token boundary (byte-level BPE, Llama 3's tokenizer). The encoder checks this against full
encoding on its first ``verify`` prompts and encodes in full for good if any of them differs
(e.g. SentencePiece tokenizers that prefix each text with a space marker).

:meth:`PromptEncoder.prefix_lengths` gives each prompt's meta-prompt length in tokens (its first
:func:`meta_prompt_lines` lines), for reusing the meta-prompts' KV states
(:mod:`trainers.policy.prefix_cache`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch


def meta_prompt_lines(render, template: str) -> int:
    """Complete lines before the observation in ``render(template, observation)``: the
    meta-prompt with what the renderer (e.g. a chat template) puts around it."""
    marker = "\x00observation"
    return render(template, marker).split(marker)[0].count("\n")


def left_pad(ids: list[list[int]], pad: int,
             device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Token id rows -> left-padded ``(input_ids, attention_mask)`` (B, P) on ``device``."""
    width = max(len(row) for row in ids)
    input_ids = np.full((len(ids), width), pad, dtype=np.int64)  # (B, P)
    attention_mask = np.zeros((len(ids), width), dtype=np.int64)  # (B, P)
    for b, row in enumerate(ids):
        input_ids[b, width - len(row):] = row
        attention_mask[b, width - len(row):] = 1
    device = device or "cpu"
    return torch.from_numpy(input_ids).to(device), torch.from_numpy(attention_mask).to(device)


def load_tokenizer(name_or_path: str):
    """``AutoTokenizer.from_pretrained`` with the one pad-token fallback: EOS when the
    checkpoint defines no pad token (prompts are left-padded and masked, so its id never counts)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(name_or_path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _pad_id(tokenizer) -> int:
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (
        tokenizer.eos_token_id)


def _fast_backend(tokenizer):
    """The Rust tokenizer when it may be called directly (no padding/truncation set on it)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None and backend.padding is None and backend.truncation is None:
        return backend
    return None


def _encode(tokenizer, texts: list[str], special: bool) -> list[list[int]]:
    backend = _fast_backend(tokenizer)
    if backend is not None:  # half the time of tokenizer(...)
        return [e.ids for e in backend.encode_batch_fast(texts, add_special_tokens=special)]
    return tokenizer(texts, add_special_tokens=special, padding=False,
                     truncation=False)["input_ids"]


def _check(prompts: Sequence[str]) -> list[str]:
    if isinstance(prompts, str):
        raise ValueError("prompts is a single str; allowed: a sequence of prompt texts")
    return list(prompts)


def encode_prompts(tokenizer, prompts: Sequence[str],
                   device: torch.device | str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded ``(input_ids, attention_mask)`` (B, P) with the tokenizer's special tokens.

    The tokenizer is not modified.
    """
    return left_pad(_encode(tokenizer, _check(prompts), True), _pad_id(tokenizer), device)


class PromptEncoder:
    """:func:`encode_prompts` with a cache of line ids (see the module docstring)."""

    def __init__(self, tokenizer, verify: int = 256, max_lines: int = 200_000) -> None:
        self.tokenizer, self.max_lines = tokenizer, max_lines
        self._lines: dict[str, list[int]] = {}
        self._unverified = verify
        self.line_cache = True
        probe = "TTI"  # the special tokens around any text: ids(probe) within ids(specials, probe)
        plain, full = _encode(tokenizer, [probe], False)[0], _encode(tokenizer, [probe], True)[0]
        cut = next((k for k in range(len(full) - len(plain) + 1)
                    if full[k:k + len(plain)] == plain), None)
        if cut is None:
            self.line_cache = False
        else:
            self._prefix, self._suffix = full[:cut], full[cut + len(plain):]

    def __call__(self, prompts: Sequence[str],
                 device: torch.device | str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        prompts = _check(prompts)
        if not self.line_cache:
            return encode_prompts(self.tokenizer, prompts, device)
        split = [p.splitlines(keepends=True) for p in prompts]
        missing = list({line for lines in split for line in lines if line not in self._lines})
        if len(self._lines) + len(missing) > self.max_lines:
            self._lines.clear()
            missing = list({line for lines in split for line in lines})
        if missing:
            self._lines.update(zip(missing, _encode(self.tokenizer, missing, False), strict=True))
        ids = []
        for lines in split:
            row = list(self._prefix)
            for line in lines:
                row += self._lines[line]
            ids.append(row + self._suffix)
        if self._unverified > 0:
            self._unverified -= len(prompts)
            if ids != _encode(self.tokenizer, prompts, True):
                self.line_cache = False
                self._lines.clear()
                return encode_prompts(self.tokenizer, prompts, device)
        return left_pad(ids, _pad_id(self.tokenizer), device)

    def prefix_lengths(self, prompts: Sequence[str], lines: int) -> list[int] | None:
        """Tokens of each prompt's first ``lines`` lines (special tokens included), at most
        all but its last line; None when the line cache is off (token boundaries unknown).
        Call after encoding ``prompts``."""
        if not self.line_cache:
            return None
        out = []
        for prompt in _check(prompts):
            head = prompt.splitlines(keepends=True)[:lines]
            if len(head) == lines and any(line not in self._lines for line in head):
                return None  # not encoded yet
            out.append(len(self._prefix) + sum(len(self._lines[line]) for line in head))
        return out
