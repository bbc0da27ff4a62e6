"""transformers' KV-cache argument under either name, for any module that calls a model forward.

transformers renamed the forward argument ``past_key_values`` to ``cache`` (5.x; the old name
warns and goes in 5.40): :func:`cache_kwargs` and :func:`output_cache` use whichever name the
model declares. This module imports nothing (not even transformers), so both the PAG sampler
(:mod:`trainers.pag.sampler`) and the policy (:mod:`trainers.policy`) can import it without
importing each other.
"""

from __future__ import annotations

import functools
import inspect


@functools.cache
def _cache_keyword(forward) -> str:
    return "cache" if "cache" in inspect.signature(forward).parameters else "past_key_values"


def cache_kwargs(model, cache) -> dict:
    """``{name: cache}`` for ``model``'s forward (a PEFT model passes it on to its base)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return {_cache_keyword(type(base).forward): cache}


def output_cache(out):
    """The cache a forward returned (``out.cache``, formerly ``out.past_key_values``)."""
    return out["cache"] if "cache" in out else out["past_key_values"]
