"""Action text <-> numeric action (design §4, inverse mapping of eq. 11).

The formats are fixed (the PAG grammars of ``grammars/`` are written against them):

- Leader: exactly N decimal integers separated by single spaces, each in 0..I_t, no leading
  zeros. ``"3 0 1 2"``: RBG1 -> UE3, RBG2 -> nobody, RBG3 -> UE1, RBG4 -> UE2.
- Follower: exactly N characters '0'/'1' (the bitmap, RBG1 first), one space, then the UCM in
  0..K-1 without leading zeros. ``"1010 2"``: transmit on RBGs 1 and 3, UCM 2.

Surrounding whitespace is tolerated; anything else must match exactly. :func:`parse_dcm` and
:func:`parse_follower` raise :class:`ParseError` naming the text, the 0-based position in it and
what was expected there. :func:`read_dcm` and :func:`read_follower` are the lenient variants
used by the text environment: an unparsable text becomes the no-op action, flagged invalid.
"""

from __future__ import annotations

import numpy as np

DIGITS = "0123456789"  # ASCII only: str.isdigit would accept e.g. Arabic-Indic digits
_SHOWN_CHARS = 120  # longer texts are cut in error messages (LLM outputs can be long)


class ParseError(ValueError):
    """A text that is not a valid action; the message names the text, a position and the cause."""


def _show(text: str) -> str:
    if len(text) <= _SHOWN_CHARS:
        return repr(text)
    return repr(text[:_SHOWN_CHARS]) + f"... ({len(text)} characters)"


class _Scanner:
    """Reads one action text left to right; positions refer to the original (unstripped) text."""

    def __init__(self, kind: str, text: str) -> None:
        if not isinstance(text, str):
            raise TypeError(f"{kind} text must be a str, got {type(text).__name__}")
        self.kind, self.text = kind, text
        self.pos = len(text) - len(text.lstrip())
        self.end = len(text.rstrip())

    def fail(self, what: str, pos: int | None = None) -> None:
        pos = self.pos if pos is None else pos
        raise ParseError(f"{self.kind} text {_show(self.text)} at position {pos}: {what}")

    def found(self) -> str:
        return "end of text" if self.pos >= self.end else repr(self.text[self.pos])

    def expect_space(self, what_follows: str) -> None:
        if self.pos >= self.end or self.text[self.pos] != " ":
            self.fail(f"expected ' ' then {what_follows}, got {self.found()}")
        self.pos += 1

    def number(self, name: str, high: int) -> int:
        """A decimal integer in 0..high without leading zeros."""
        start = self.pos
        while self.pos < self.end and self.text[self.pos] in DIGITS:
            self.pos += 1
        digits = self.text[start:self.pos]
        if not digits:
            self.fail(f"expected {name} (0..{high}), got {self.found()}")
        if len(digits) > 1 and digits[0] == "0":
            self.fail(f"{name} {digits} has a leading zero", start)
        # compare lengths first: int() of a huge digit string is slow or refused
        if len(digits) > len(str(high)) or int(digits) > high:
            shown = digits if len(digits) <= 12 else digits[:12] + "..."
            self.fail(f"{name} {shown} is out of range 0..{high}", start)
        return int(digits)

    def expect_end(self, what_was_read: str) -> None:
        if self.pos < self.end:
            self.fail(f"expected end of text after {what_was_read}, got {self.found()}")


def _check_size(name: str, value: int, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ValueError(f"{name} = {value!r} is invalid; allowed: an integer >= {low}")


def parse_dcm(text: str, n_rbgs: int, n_ues: int) -> np.ndarray:
    """DCM text -> (N,) int64 with entries in 0..n_ues (1-based UE rank, 0 = nobody)."""
    _check_size("n_rbgs", n_rbgs, 1)
    _check_size("n_ues", n_ues, 0)
    scan = _Scanner("dcm", text)
    dcm = np.zeros(n_rbgs, dtype=np.int64)
    for n in range(n_rbgs):
        if n > 0:
            left = n_rbgs - n
            scan.expect_space(f"{left} more UE number{'s' if left > 1 else ''}")
        dcm[n] = scan.number("UE", n_ues)
    scan.expect_end(f"{n_rbgs} UE numbers")
    return dcm


def parse_follower(text: str, n_rbgs: int, ucm_levels: int) -> tuple[np.ndarray, int]:
    """Follower text -> (bitmap (N,) bool, UCM int in 0..K-1)."""
    _check_size("n_rbgs", n_rbgs, 1)
    _check_size("ucm_levels", ucm_levels, 1)
    scan = _Scanner("follower", text)
    bitmap = np.zeros(n_rbgs, dtype=bool)
    for n in range(n_rbgs):
        if scan.pos >= scan.end or scan.text[scan.pos] not in "01":
            scan.fail(f"expected bit {n + 1} of {n_rbgs} ('0' or '1'), got {scan.found()}")
        bitmap[n] = scan.text[scan.pos] == "1"
        scan.pos += 1
    scan.expect_space(f"a UCM (0..{ucm_levels - 1})")
    ucm = scan.number("UCM", ucm_levels - 1)
    scan.expect_end("the bitmap and the UCM")
    return bitmap, ucm


def read_dcm(text: str, n_rbgs: int, n_ues: int, *,
             strict: bool = False) -> tuple[np.ndarray, bool]:
    """``(dcm, invalid)``: lenient mode maps an unparsable text to the no-op DCM (all zeros)."""
    try:
        return parse_dcm(text, n_rbgs, n_ues), False
    except ParseError:
        if strict:
            raise
        return np.zeros(n_rbgs, dtype=np.int64), True


def read_follower(text: str, n_rbgs: int, ucm_levels: int, *,
                  strict: bool = False) -> tuple[np.ndarray, int, bool]:
    """``(bitmap, ucm, invalid)``: lenient mode maps an unparsable text to silence and UCM 0."""
    try:
        bitmap, ucm = parse_follower(text, n_rbgs, ucm_levels)
        return bitmap, ucm, False
    except ParseError:
        if strict:
            raise
        return np.zeros(n_rbgs, dtype=bool), 0, True


def format_dcm(dcm) -> str:
    """(N,) non-negative integers -> DCM text; the exact inverse of :func:`parse_dcm`."""
    dcm = np.asarray(dcm)
    if dcm.ndim != 1 or dcm.size == 0 or not np.issubdtype(dcm.dtype, np.integer):
        raise ValueError(f"dcm has shape {dcm.shape} and dtype {dcm.dtype}; expected a "
                         "non-empty 1-D integer array (N,)")
    if (dcm < 0).any():
        raise ValueError(f"dcm = {dcm.tolist()} is invalid; allowed: entries >= 0")
    return " ".join(str(int(a)) for a in dcm)


def format_follower(bitmap, ucm) -> str:
    """(N,) bits and a UCM -> follower text; the exact inverse of :func:`parse_follower`."""
    bitmap = np.asarray(bitmap)
    if bitmap.ndim != 1 or bitmap.size == 0:
        raise ValueError(f"bitmap has shape {bitmap.shape}; expected a non-empty 1-D array (N,)")
    if bitmap.dtype != bool and ((bitmap != 0) & (bitmap != 1)).any():
        raise ValueError(f"bitmap = {bitmap.tolist()} is invalid; allowed: entries 0 or 1")
    if (isinstance(ucm, bool) or not isinstance(ucm, (int, np.integer))) or ucm < 0:
        raise ValueError(f"ucm = {ucm!r} is invalid; allowed: an integer >= 0")
    return "".join("1" if b else "0" for b in bitmap) + f" {int(ucm)}"
