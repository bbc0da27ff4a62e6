"""PAG backends (design §5): how the allowed token sets V^- of :mod:`trainers.pag.sampler` are made.

One interface, :class:`~trainers.pag.backends.base.GrammarBackend` (with its
:class:`~trainers.pag.backends.base.GrammarProgram` and
:class:`~trainers.pag.backends.base.GrammarState`), one module per backend, and one factory,
:func:`get_backend`, that maps a ``pag_backend`` name to its backend:

- ``llguidance`` (:mod:`~trainers.pag.backends.llguidance`, the default): the Lark CFG of
  ``grammars/``; llguidance matchers on the host, masks kept per token prefix in a trie.
- ``regex`` (:mod:`~trainers.pag.backends.regex`): the equivalent regex as an outlines_core DFA
  held in small dense tensors on the model's device.
- ``none`` (:mod:`~trainers.pag.backends.free`): PAG off (the ablation), every tokenizer token
  until EOS.

Importing this package imports torch and numpy only: llguidance, outlines and outlines_core are
imported when a grammar is first compiled.
"""

from __future__ import annotations

from trainers.pag.backends.base import GrammarBackend, GrammarProgram, GrammarState, Vocab
from trainers.pag.backends.free import FreeBackend
from trainers.pag.backends.llguidance import LLGuidanceBackend
from trainers.pag.backends.regex import RegexBackend

BACKENDS: dict[str, type[GrammarBackend]] = {
    backend.name: backend for backend in (LLGuidanceBackend, RegexBackend, FreeBackend)}
"""``pag_backend`` name -> backend class, in the order the docs list them."""


def get_backend(name: str) -> GrammarBackend:
    """The backend called ``name``; a ValueError naming the value and the allowed names else."""
    if not isinstance(name, str) or name not in BACKENDS:
        raise ValueError(f"backend = {name!r} is invalid; allowed: one of {list(BACKENDS)}")
    return BACKENDS[name]()


__all__ = ["BACKENDS", "GrammarBackend", "GrammarProgram", "GrammarState", "Vocab",
           "get_backend"]
