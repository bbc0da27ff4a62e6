"""The one PAG backend interface (design §5), in the manner of Outlines' ``backends/base.py``.

A :class:`GrammarBackend` turns one action language, for one tokenizer (a :class:`Vocab`) and
V output rows, into a :class:`GrammarProgram` (``compile``, from the grammar text its
``source`` renders), and runs a batch of rows, one program per row, as a :class:`GrammarState`
(``start``): ``allowed()`` -> (B, V) bool = V^- (eq. 14), ``advance(tokens)``, ``done`` and
``all_done()``. Padding rows of V (ids >= len(tokenizer)) are never allowed; after EOS a row
allows exactly {EOS}.

Every object the masks come from is made by Outlines' own backend classes
(``outlines.backends.llguidance.LLGuidanceBackend``,
``outlines.backends.outlines_core.OutlinesCoreBackend``) over an Outlines ``Transformers``
wrapper of a private copy of the tokenizer (the wrapper sets ``padding_side`` and ``pad_token``
on what it is given) and no model: grammar compilation reads only the tokenizer, so no weights
are needed.
"""

from __future__ import annotations

import copy
import functools
import threading
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import ClassVar

import torch

from grammars import render_grammar

_LOCK = threading.Lock()


class Vocab:
    """What every grammar of one tokenizer shares; the Outlines objects are built on first use."""

    def __init__(self, tokenizer) -> None:
        if tokenizer.eos_token_id is None:
            raise ValueError("tokenizer.eos_token_id is None; allowed: a tokenizer with EOS")
        self.tokenizer = copy.deepcopy(tokenizer)
        self.eos = int(tokenizer.eos_token_id)
        self.n_tokens = len(tokenizer)
        self.special_ids = frozenset(tokenizer.all_special_ids) - {self.eos}

    @functools.cached_property
    def outlines_model(self):
        import outlines

        return outlines.from_transformers(None, self.tokenizer)  # the backends read no weights

    @functools.cached_property
    def llg_tokenizer(self):
        from outlines.backends.llguidance import LLGuidanceBackend

        return LLGuidanceBackend(self.outlines_model).llg_tokenizer

    @functools.cached_property
    def outlines_core_vocabulary(self):
        from outlines.backends.outlines_core import OutlinesCoreBackend

        return OutlinesCoreBackend(self.outlines_model).vocabulary

    def token_text(self, token_id: int) -> str:
        """The text outlines_core matches for a token (Outlines' own conversion)."""
        token = self.tokenizer.convert_ids_to_tokens(token_id)
        return self.outlines_model.tokenizer.convert_token_to_string(token)


class OnDevice:
    """Tensors of a program, copied to each device once."""

    def __init__(self, tensors) -> None:
        self._copies = {torch.device("cpu"): tensors}

    def on(self, device: torch.device):
        with _LOCK:
            if device not in self._copies:
                cpu = self._copies[torch.device("cpu")]
                self._copies[device] = (cpu.to(device) if isinstance(cpu, torch.Tensor)
                                        else type(cpu)(*(x.to(device) for x in cpu)))
            return self._copies[device]


# ---------------------------------------------------------------------------- the interface
class GrammarProgram(ABC):
    """One action language compiled for one tokenizer and V: immutable, shared by many rows."""

    vocab: Vocab

    @abstractmethod
    def decode(self, ids: list[int]) -> str:
        """The action text of token ids (without the final EOS)."""


class GrammarState(ABC):
    """Where each of B rows stands in its grammar: ``allowed()`` -> (B, V) bool, ``advance``.

    ``grammars`` are the rows' :class:`trainers.pag.sampler.ActionGrammar` s (each has
    ``program``, ``vocab_size`` and ``eos_token_id``).
    """

    def __init__(self, grammars: Sequence, device: torch.device) -> None:
        self.grammars, self.device = list(grammars), device
        self.batch, self.vocab_size = len(grammars), grammars[0].vocab_size
        self.eos = grammars[0].eos_token_id
        self._done = torch.zeros(self.batch, dtype=torch.bool, device=device)  # (B,)

    @property
    def done(self) -> torch.Tensor:
        """(B,) bool: the row has consumed EOS."""
        return self._done

    def all_done(self) -> bool:
        return bool(self._done.all())

    @abstractmethod
    def allowed(self) -> torch.Tensor:
        """(B, V) bool: V^- of every row (eq. 14); {EOS} for done rows."""

    @abstractmethod
    def advance(self, tokens: torch.Tensor) -> None:
        """Consume one token per row (EOS for done rows); raises on a token outside V^-."""

    def _reject(self, row: int, token: int, why: str = "") -> None:
        raise ValueError(f"row {row}: token {token} is not allowed by {self.grammars[row]!r} "
                         f"at this point{': ' + why if why else ''}")


class GrammarBackend(ABC):
    """One way of making V^-: which grammar text it reads, how it compiles and runs it."""

    name: ClassVar[str]  # the ``pag_backend`` value that selects it

    def source(self, role: str, n_ues: int, n_rbgs: int, ucm_levels: int) -> str:
        """The grammar text this backend compiles for (role, I, N, K): the Lark CFG."""
        return render_grammar(role, n_ues, n_rbgs, ucm_levels)

    @abstractmethod
    def compile(self, vocab: Vocab, source: str, vocab_size: int) -> GrammarProgram:
        """The program of ``source`` (from :meth:`source`) over ``vocab`` and V = vocab_size."""

    @abstractmethod
    def start(self, grammars: Sequence, device: torch.device) -> GrammarState:
        """Rows at the start of their grammars (whose programs this backend compiled)."""
