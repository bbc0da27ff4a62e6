"""The ``none`` PAG backend: PAG off (the ablation), every tokenizer token until EOS.

The Lark text is rendered (``ActionGrammar.source``) but not enforced. The action text keeps
special tokens, so the lenient parser sees what the model wrote.
"""

from __future__ import annotations

import torch

from trainers.pag.backends.base import GrammarBackend, GrammarProgram, GrammarState, OnDevice, Vocab


class FreeProgram(GrammarProgram):
    def __init__(self, vocab: Vocab, source: str, vocab_size: int) -> None:
        self.vocab = vocab
        real = torch.zeros(vocab_size, dtype=torch.bool)  # (V,)
        real[:vocab.n_tokens] = True
        self.real = OnDevice(real)

    def decode(self, ids: list[int]) -> str:
        """Special tokens stay in the text: a "<bos>" emitted by the model makes it invalid."""
        return self.vocab.tokenizer.decode(ids, skip_special_tokens=False,
                                           clean_up_tokenization_spaces=False)


class FreeState(GrammarState):
    """PAG off: every tokenizer token is allowed until EOS (padding rows never are)."""

    def __init__(self, grammars, device) -> None:
        super().__init__(grammars, device)
        self._real = grammars[0].program.real.on(device)  # (V,)

    def allowed(self) -> torch.Tensor:
        out = self._real.expand(self.batch, -1).clone()
        out[self._done] = False
        out[self._done, self.eos] = True
        return out

    def advance(self, tokens: torch.Tensor) -> None:
        tokens = tokens.to(self.device)
        bad = ~self._real[tokens] | (self._done & (tokens != self.eos))
        if bad.any():
            i = int(bad.nonzero()[0])
            self._reject(i, int(tokens[i]))
        self._done = self._done | (tokens == self.eos)


class FreeBackend(GrammarBackend):
    name = "none"

    def compile(self, vocab: Vocab, source: str, vocab_size: int) -> FreeProgram:
        return FreeProgram(vocab, source, vocab_size)

    def start(self, grammars, device: torch.device) -> FreeState:
        return FreeState(grammars, device)
