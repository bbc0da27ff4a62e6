"""Protocol action grammars (PAG, design §5): the exact languages of leader and follower actions.

``leader.lark`` and ``follower.lark`` are Lark templates (``$name`` placeholders) for the CFG
backend (llguidance); :func:`render_grammar` fills them for (I, N, K) and :func:`render_regex`
gives the same language as one regular expression for the regex backend (outlines_core). Both
describe the canonical texts of :mod:`textgame.parsing` (``format_dcm`` / ``format_follower``)
and nothing else: no surrounding whitespace, no leading zeros, no end-of-text marker (the
backends add EOS). This package imports neither torch nor the other packages of the project.
"""

from __future__ import annotations

import functools
import operator
import string
from importlib import resources

ROLES = ("leader", "follower")


def _check_int(name: str, value: object, low: int) -> int:
    try:
        if isinstance(value, bool):
            raise TypeError
        number = operator.index(value)
    except TypeError:
        number = None
    if number is None or number < low:
        raise ValueError(f"{name} = {value!r} is invalid; allowed: an integer >= {low}")
    return number


def _check(role: object, n_ues: object, n_rbgs: object, ucm_levels: object) -> tuple[int, ...]:
    if role not in ROLES:
        raise ValueError(f"role = {role!r} is invalid; allowed: one of {list(ROLES)}")
    return (_check_int("n_ues", n_ues, 0), _check_int("n_rbgs", n_rbgs, 1),
            _check_int("ucm_levels", ucm_levels, 1))


def _digit_class(low: str, high: str) -> str:
    return low if low == high else f"[{low}-{high}]"


def _same_width(low: str, high: str) -> list[str]:
    """Patterns for the integers low..high written with the same number of digits."""
    if len(low) == 1:
        return [_digit_class(low, high)]
    if low[0] == high[0]:
        return [low[0] + p for p in _same_width(low[1:], high[1:])]
    rest = len(low) - 1
    first, last = int(low[0]), int(high[0])
    head, tail = [], []
    if low[1:] != "0" * rest:  # low[0] followed by low[1:]..99..9
        head = [low[0] + p for p in _same_width(low[1:], "9" * rest)]
        first += 1
    if high[1:] != "9" * rest:  # high[0] followed by 00..0..high[1:]
        tail = [high[0] + p for p in _same_width("0" * rest, high[1:])]
        last -= 1
    middle = [_digit_class(str(first), str(last)) + "[0-9]" * rest] if first <= last else []
    return head + middle + tail


def number_regex(high: int) -> str:
    """Decimal integers 0..high without leading zeros, e.g. ``12 -> '1[0-2]|[0-9]'``.

    Alternatives come longest first: outlines_core compiles with leftmost-first priority, so
    ``[0-9]|1[0-2]`` would end a final number after its first digit and reject ``"12"``.
    Digits are written as ``[0-9]``, never ``\\d`` (which is Unicode-aware in Rust's regex).
    """
    high = _check_int("high", high, 0)
    alternatives = []
    for width in range(len(str(high)), 0, -1):
        low = 0 if width == 1 else 10 ** (width - 1)
        alternatives += _same_width(str(low), str(min(high, 10**width - 1)))
    return "|".join(alternatives)


@functools.cache
def _template(role: str) -> string.Template:
    return string.Template((resources.files("grammars") / f"{role}.lark").read_text("utf-8"))


def render_grammar(role: str, n_ues: int, n_rbgs: int, ucm_levels: int) -> str:
    """Lark text (llguidance dialect) of the ``role`` action for I = n_ues, N, K = ucm_levels."""
    n_ues, n_rbgs, ucm_levels = _check(role, n_ues, n_rbgs, ucm_levels)
    return _template(role).substitute(
        n_ues=n_ues, n_rbgs=n_rbgs, more_rbgs=n_rbgs - 1, max_ucm=ucm_levels - 1,
        ue_number=number_regex(n_ues), ucm_number=number_regex(ucm_levels - 1))


def render_regex(role: str, n_ues: int, n_rbgs: int, ucm_levels: int) -> str:
    """A regular expression with the same language as :func:`render_grammar`."""
    n_ues, n_rbgs, ucm_levels = _check(role, n_ues, n_rbgs, ucm_levels)
    if role == "leader":
        ue = f"(?:{number_regex(n_ues)})"
        return ue + (f"(?: {ue}){{{n_rbgs - 1}}}" if n_rbgs > 1 else "")
    return f"[01]{{{n_rbgs}}} (?:{number_regex(ucm_levels - 1)})"


def max_action_chars(role: str, n_ues: int, n_rbgs: int, ucm_levels: int) -> int:
    """Length of the longest action text; an action never takes more tokens than this + EOS."""
    n_ues, n_rbgs, ucm_levels = _check(role, n_ues, n_rbgs, ucm_levels)
    if role == "leader":
        return n_rbgs * len(str(n_ues)) + n_rbgs - 1
    return n_rbgs + 1 + len(str(ucm_levels - 1))


__all__ = ["ROLES", "max_action_chars", "number_regex", "render_grammar", "render_regex"]
