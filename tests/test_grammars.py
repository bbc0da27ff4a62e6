"""PAG grammars (design §5): rendering, validation, and languages equal to textgame.parsing."""

import functools
import re

import llguidance
import llguidance.hf
import outlines_core
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from grammars import max_action_chars, number_regex, render_grammar, render_regex
from textgame.parsing import format_dcm, format_follower, parse_dcm, parse_follower

FAST = settings(max_examples=300, deadline=None, database=None)
ALPHABET = "0123456789 \t\n-+x١"  # '١' is an Arabic-Indic digit: str.isdigit, not ASCII


def canonical(role: str, text: str, n_ues: int, n_rbgs: int, ucm_levels: int) -> bool:
    """textgame.parsing's language without its whitespace tolerance: parse and format back."""
    try:
        if role == "leader":
            return format_dcm(parse_dcm(text, n_rbgs, n_ues)) == text
        return format_follower(*parse_follower(text, n_rbgs, ucm_levels)) == text
    except ValueError:
        return False


# ------------------------------------------------------------- character-level grammar engines
@functools.cache
def char_tokenizer() -> PreTrainedTokenizerFast:
    """One token per byte (and EOS): every string has exactly one tokenization."""
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {ch: i for i, ch in enumerate(alphabet)} | {"<eos>": len(alphabet)}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>")


@functools.cache
def llg_tokenizer():
    return llguidance.hf.from_tokenizer(char_tokenizer())


@functools.cache
def llg_matcher(role: str, n_ues: int, n_rbgs: int, ucm_levels: int):
    grammar = llguidance.LLMatcher.grammar_from_lark(
        render_grammar(role, n_ues, n_rbgs, ucm_levels))
    return llguidance.LLMatcher(llg_tokenizer(), grammar, log_level=0)


def lark_accepts(role: str, text: str, *size: int) -> bool:
    matcher = llg_matcher(role, *size).deep_copy()
    return matcher.consume_tokens(llg_tokenizer().tokenize_str(text)) and matcher.is_accepting()


@functools.cache
def char_index(regex: str) -> outlines_core.Index:
    vocab = {ch: [i] for i, ch in enumerate(ALPHABET)}
    return outlines_core.Index(regex, outlines_core.Vocabulary(len(ALPHABET), vocab))


def outlines_core_accepts(regex: str, text: str) -> bool:
    """Walk the outlines_core DFA (leftmost-first semantics, unlike Python's re)."""
    index = char_index(regex)
    state = index.get_initial_state()
    for ch in text:
        state = index.get_next_state(state, ALPHABET.index(ch))
        if state is None:
            return False
    return index.is_final_state(state)


# ------------------------------------------------------------------------------------ strategies
sizes = st.tuples(st.integers(0, 130), st.integers(1, 8), st.integers(1, 12))


@st.composite
def near_actions(draw, role: str, n_ues: int, n_rbgs: int, ucm_levels: int) -> str:
    """Valid actions, out-of-range numbers, and single-character edits of them."""
    count = draw(st.integers(max(1, n_rbgs - 1), n_rbgs + 1))
    if role == "leader":
        text = " ".join(str(draw(st.integers(0, n_ues + 2))) for _ in range(count))
    else:
        bits = "".join(draw(st.sampled_from("01")) for _ in range(count))
        text = f"{bits} {draw(st.integers(0, ucm_levels + 1))}"
    edit = draw(st.sampled_from(["none"] * 3 + ["insert", "delete", "replace", "zero", "pad"]))
    pos = draw(st.integers(0, len(text)))
    ch = draw(st.sampled_from(ALPHABET))
    if edit == "insert":
        text = text[:pos] + ch + text[pos:]
    elif edit == "delete":
        text = text[:pos] + text[pos + 1:]
    elif edit == "replace":
        text = text[:pos] + ch + text[pos + 1:]
    elif edit == "zero":
        text = text[:pos] + "0" + text[pos:]
    elif edit == "pad":
        text = draw(st.sampled_from([" ", "\n", ""])) + text + draw(st.sampled_from([" ", ""]))
    return text


@st.composite
def cases(draw):
    role = draw(st.sampled_from(["leader", "follower"]))
    n_ues, n_rbgs, ucm_levels = draw(sizes)
    text = draw(st.one_of(near_actions(role, n_ues, n_rbgs, ucm_levels),
                          st.text(ALPHABET, max_size=30)))
    return role, text, n_ues, n_rbgs, ucm_levels


# ------------------------------------------------------------------------------------ rendering
def test_leader_grammar_renders_the_template_for_i_n():
    text = render_grammar("leader", n_ues=12, n_rbgs=4, ucm_levels=4)
    assert 'start: UE (" " UE)~3\nUE: /1[0-2]|[0-9]/\n' in text
    assert "$" not in text


def test_follower_grammar_renders_the_template_for_n_k():
    text = render_grammar("follower", n_ues=3, n_rbgs=5, ucm_levels=4)
    assert 'start: BITMAP " " UCM\nBITMAP: /[01]{5}/\nUCM: /[0-3]/\n' in text


def test_regexes_of_both_roles():
    assert render_regex("leader", 12, 3, 4) == "(?:1[0-2]|[0-9])(?: (?:1[0-2]|[0-9])){2}"
    assert render_regex("leader", 2, 1, 4) == "(?:[0-2])"
    assert render_regex("follower", 2, 4, 12) == "[01]{4} (?:1[0-1]|[0-9])"


@pytest.mark.parametrize("high, regex", [
    (0, "0"), (1, "[0-1]"), (9, "[0-9]"), (10, "10|[0-9]"), (12, "1[0-2]|[0-9]"),
    (100, "100|[1-9][0-9]|[0-9]"), (123, "1[0-1][0-9]|12[0-3]|[1-9][0-9]|[0-9]")])
def test_number_regex_lists_longer_alternatives_first(high, regex):
    assert number_regex(high) == regex
    widths = [len(re.sub(r"\[.-.\]", "d", alt)) for alt in regex.split("|")]
    assert widths == sorted(widths, reverse=True)


@pytest.mark.parametrize("high", [0, 1, 7, 10, 12, 19, 20, 55, 99, 100, 101, 109, 110, 999, 1000,
                                  1234])
def test_number_regex_matches_exactly_the_integers_0_to_high(high):
    pattern = re.compile(number_regex(high))
    for value in range(0, 1300):
        for text in (str(value), "0" + str(value)):
            assert bool(pattern.fullmatch(text)) == (text == str(value) and value <= high), text


def test_max_action_chars_is_the_longest_action():
    assert max_action_chars("leader", 12, 4, 4) == len(format_dcm([12, 12, 12, 12]))
    assert max_action_chars("leader", 9, 1, 4) == 1
    assert max_action_chars("follower", 12, 4, 11) == len(format_follower([1, 0, 1, 0], 10))


@pytest.mark.parametrize("render", [render_grammar, render_regex, max_action_chars])
@pytest.mark.parametrize("args, message", [
    (("boss", 3, 4, 4), "role = 'boss' is invalid; allowed: one of ['leader', 'follower']"),
    (("leader", -1, 4, 4), "n_ues = -1 is invalid; allowed: an integer >= 0"),
    (("leader", 3, 0, 4), "n_rbgs = 0 is invalid; allowed: an integer >= 1"),
    (("follower", 3, 4, 0), "ucm_levels = 0 is invalid; allowed: an integer >= 1"),
    (("leader", 3.0, 4, 4), "n_ues = 3.0 is invalid; allowed: an integer >= 0"),
    (("leader", 3, True, 4), "n_rbgs = True is invalid; allowed: an integer >= 1"),
    (("follower", 3, "4", 4), "n_rbgs = '4' is invalid; allowed: an integer >= 1")])
def test_invalid_arguments_raise_naming_argument_value_and_allowed(render, args, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        render(*args)


# ------------------------------------------------------------------------- language equality
@FAST
@given(cases())
def test_python_regex_accepts_exactly_the_canonical_actions(case):
    role, text, *size = case
    assert bool(re.fullmatch(render_regex(role, *size), text)) == canonical(role, text, *size)


@FAST
@given(cases())
def test_outlines_core_regex_accepts_exactly_the_canonical_actions(case):
    role, text, *size = case
    assert outlines_core_accepts(render_regex(role, *size), text) == canonical(role, text, *size)


@FAST
@given(cases())
def test_llguidance_lark_accepts_exactly_the_canonical_actions(case):
    role, text, *size = case
    assert lark_accepts(role, text, *size) == canonical(role, text, *size)


@pytest.mark.parametrize("text, accepted", [
    ("12 0 3 12", True), ("1 12 3 0", True), ("13 0 0 0", False), ("0 0 0 13", False),
    ("0 0 0 1", True), ("00 0 0 0", False), ("0 0 0 01", False), ("0 0 0", False),
    ("0  0 0 0", False), (" 0 0 0 0", False), ("0 0 0 0 ", False), ("0 0 0 0 0", False)])
def test_leader_edge_cases_for_i_12_n_4(text, accepted):
    regex = render_regex("leader", 12, 4, 4)
    assert canonical("leader", text, 12, 4, 4) == accepted
    assert outlines_core_accepts(regex, text) == accepted
    assert lark_accepts("leader", text, 12, 4, 4) == accepted


@pytest.mark.parametrize("text, accepted", [
    ("1010 2", True), ("0000 0", True), ("1010 4", False), ("1010 02", False), ("101 2", False),
    ("10101 2", False), ("1012 2", False), ("1010  2", False), ("1010", False)])
def test_follower_edge_cases_for_n_4_k_4(text, accepted):
    regex = render_regex("follower", 3, 4, 4)
    assert canonical("follower", text, 3, 4, 4) == accepted
    assert outlines_core_accepts(regex, text) == accepted
    assert lark_accepts("follower", text, 3, 4, 4) == accepted


def test_grammars_do_not_import_torch():
    import subprocess
    import sys

    code = "import sys, grammars; grammars.render_grammar('leader', 3, 4, 4); " \
           "print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
