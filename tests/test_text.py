"""Text layer (design §4, eq. 11): prompt formats, action parsing and formatting."""

import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from textgame.config import ConfigError
from textgame.game import FollowerObs, LeaderObs
from textgame.parsing import (
    ParseError,
    format_dcm,
    format_follower,
    parse_dcm,
    parse_follower,
    read_dcm,
    read_follower,
)
from textgame.prompts import (
    PromptBuilder,
    TextConfig,
    follower_observation,
    leader_observation,
    packaged_template,
)
from textgame.simulator import COLLISION, ERASURE, IDLE, SUCCESS

SE = np.array([0.2344, 0.3770, 0.6016])
LEADER_SYSTEM_I3 = (
    "You are the base station scheduling the uplink of a cell with 4 RBGs and 3 UEs.\n"
    "An RBG carries data only if exactly one UE transmits on it. Aim for high throughput and "
    "fairness.\n"
    "Per UE you see: ucm = its last message (0..3), csi = your channel estimate, served = RBGs it "
    "used so far, bsr = packets it reported buffered.\n"
    "Reply with 4 numbers separated by spaces, one per RBG in order: the UE (1..3), or 0 for none.")
FOLLOWER_SYSTEM_UE2 = (
    "You are UE2 in an uplink cell with 4 RBGs. An RBG carries data only if exactly one UE "
    "transmits on it.\n"
    "The base station's DCM bit n is 1 if RBG n is meant for you.\n"
    "Reply with 4 bits, one per RBG in order (1 = transmit), a space, then your message to the "
    "base station (0..3).")


def leader_obs_i3() -> LeaderObs:
    """I_t = 3 of I_max = 4 (slot 2 inactive), N = 4, TTI 7."""
    active = np.array([[True, True, False, True]])
    return LeaderObs(
        t=7, active=active, n_active=active.sum(axis=1), ucm=np.array([[2, 0, 3, 1]]),
        csi=np.array([[2, 0, 2, 1]]), served_rbgs=np.array([[5, 1, 9, 12]]),
        queue_report=np.array([[3, 0, 8, 7]]),
        rbg_outcome=np.array([[IDLE, SUCCESS, COLLISION, ERASURE]], dtype=np.int8),
        spectral_efficiency=SE)


def follower_obs_i3() -> FollowerObs:
    """Three UEs with distinctive values (N = 4, TTI 7); slot 1 is UE2."""
    buffers = np.array([[41, 3, 58]])
    return FollowerObs(
        t=7, active=np.ones((1, 3), dtype=bool), buffer_dpdus=buffers, buffer_bits=buffers * 256,
        channel=np.array([[0, 2, 1]]),
        dcm_bits=np.array([[[1, 1, 0, 0], [1, 0, 1, 0], [0, 0, 0, 1]]], dtype=bool),
        feedback=np.array([[[ERASURE, SUCCESS, IDLE, IDLE], [SUCCESS, IDLE, COLLISION, IDLE],
                            [IDLE, IDLE, IDLE, SUCCESS]]], dtype=np.int8),
        last_ucm=np.array([[1, 2, 3]]))


def uniform_leader_obs(n_ues: int, i_max: int = 9) -> LeaderObs:
    """The first n_ues of i_max slots active, every value a single digit."""
    active = (np.arange(i_max) < n_ues)[None, :]
    ones = np.ones((1, i_max), dtype=np.int64)
    return LeaderObs(t=3, active=active, n_active=active.sum(axis=1), ucm=ones, csi=2 * ones,
                     served_rbgs=4 * ones, queue_report=5 * ones,
                     rbg_outcome=np.zeros((1, 4), dtype=np.int8), spectral_efficiency=SE)


def builder(**config) -> PromptBuilder:
    return PromptBuilder(TextConfig(**config), n_rbgs=4, ucm_levels=4)


# ------------------------------------------------------------------------------------ prompts
def test_leader_observation_golden():
    assert leader_observation(leader_obs_i3(), 0) == (
        "TTI 7\n"
        "Last TTI: idle ok collision erased\n"
        "UE1: ucm 2 csi good served 5 bsr 3\n"
        "UE2: ucm 0 csi poor served 1 bsr 0\n"
        "UE3: ucm 1 csi medium served 12 bsr 7\n"
        "DCM:")


def test_leader_prompt_golden_is_meta_prompt_newline_observation():
    prompt = builder().leader(leader_obs_i3(), 0)
    assert prompt == LEADER_SYSTEM_I3 + "\n" + leader_observation(leader_obs_i3(), 0)


def test_follower_observation_golden():
    assert follower_observation(follower_obs_i3(), 0, 1) == (
        "TTI 7\n"
        "buffer 3\n"
        "channel good\n"
        "DCM 1010\n"
        "Last TTI: ok idle collision idle\n"
        "Action:")


def test_follower_prompt_golden_names_the_ue_by_its_rank():
    prompt = builder().follower(follower_obs_i3(), 0, 1)
    assert prompt == FOLLOWER_SYSTEM_UE2 + "\n" + follower_observation(follower_obs_i3(), 0, 1)


def test_history_lines_come_before_the_cue():
    history = ["TTI 5: DCM 1 2 3 0 outcome ok ok collision idle",
               "TTI 6: DCM 3 0 0 0 outcome erased idle idle idle"]
    text = leader_observation(leader_obs_i3(), 0, history)
    assert text.endswith("bsr 7\n" + "\n".join(history) + "\nDCM:")


def test_prompts_are_deterministic():
    a, b = builder(), builder()
    assert a.leader(leader_obs_i3(), 0) == b.leader(leader_obs_i3(), 0)
    assert a.follower(follower_obs_i3(), 0, 2) == b.follower(follower_obs_i3(), 0, 2)


def test_leader_prompt_lists_every_active_ue_in_rank_order():
    text = builder().leader(leader_obs_i3(), 0)
    assert re.findall(r"^UE(\d+):", text, flags=re.M) == ["1", "2", "3"]
    assert "served 9" not in text and "bsr 8" not in text  # the inactive slot is absent


def test_leader_prompt_grows_exactly_linearly_with_the_number_of_ues():
    prompts = [builder().leader(uniform_leader_obs(i), 0) for i in range(1, 10)]
    chars = np.diff([len(p) for p in prompts])
    words = np.diff([len(p.split()) for p in prompts])
    assert (chars == len("UE1: ucm 1 csi good served 4 bsr 5\n")).all()
    assert (words == 9).all()


def test_follower_prompt_holds_only_its_own_state():
    obs = follower_obs_i3()
    prompt = builder().follower(obs, 0, 1)
    for other in ("41", "58", "1100", "0001", "erased", "UE1", "UE3"):
        assert other not in prompt
    # changing every other UE leaves the prompt byte-identical
    for field in (obs.buffer_dpdus, obs.channel, obs.dcm_bits, obs.feedback, obs.last_ucm):
        field[0, [0, 2]] = field[0, [2, 0]]
    obs.buffer_dpdus[0, 2] = 77
    assert builder().follower(obs, 0, 1) == prompt


def test_render_callback_receives_system_and_user():
    pb = PromptBuilder(TextConfig(), 4, 4, render=lambda s, u: f"<s>{s}</s><u>{u}</u>")
    obs = leader_obs_i3()
    assert pb.leader(obs, 0) == f"<s>{LEADER_SYSTEM_I3}</s><u>{leader_observation(obs, 0)}</u>"


def test_custom_templates_replace_the_packaged_ones(tmp_path):
    (tmp_path / "l.txt").write_text("BS {n_ues}/{n_rbgs}/{max_ucm}\n")
    (tmp_path / "f.txt").write_text("UE {ue}/{n_rbgs}/{max_ucm}\n")
    pb = builder(leader_template=tmp_path / "l.txt", follower_template=str(tmp_path / "f.txt"))
    assert pb.leader(leader_obs_i3(), 0).startswith("BS 3/4/3\nTTI 7\n")
    assert pb.follower(follower_obs_i3(), 0, 2).startswith("UE 3/4/3\nTTI 7\n")


def test_packaged_templates_use_only_the_declared_placeholders():
    assert set(re.findall(r"{(\w+)}", packaged_template("leader"))) == {
        "n_rbgs", "n_ues", "max_ucm"}
    assert set(re.findall(r"{(\w+)}", packaged_template("follower"))) == {
        "n_rbgs", "ue", "max_ucm"}


# ------------------------------------------------------------------------------ TextConfig
@pytest.mark.parametrize("kwargs, message", [
    ({"history_ttis": -1}, "TextConfig.history_ttis = -1 is invalid; allowed: an integer >= 0"),
    ({"history_ttis": 1.5}, "TextConfig.history_ttis = 1.5 is invalid"),
    ({"strict": "yes"}, "TextConfig.strict = 'yes' is invalid; allowed: True or False"),
    ({"leader_template": 3}, "TextConfig.leader_template = 3 is invalid"),
    ({"follower_template": "/no/such/file.txt"},
     "TextConfig.follower_template = '/no/such/file.txt' is invalid"),
])
def test_text_config_rejects_bad_values(kwargs, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        TextConfig(**kwargs)


def test_text_config_rejects_a_template_with_an_unknown_placeholder(tmp_path):
    path = tmp_path / "leader.txt"
    path.write_text("You are UE{ue}")  # {ue} is a follower placeholder
    with pytest.raises(ConfigError, match=r"leader_template .*\{n_rbgs\}, \{n_ues\}, \{max_ucm\}"):
        TextConfig(leader_template=path)


# ------------------------------------------------------------------------------ parse errors
@pytest.mark.parametrize("text, message", [
    ("3 0 9 2", "dcm text '3 0 9 2' at position 4: UE 9 is out of range 0..3"),
    ("3 0 1", "dcm text '3 0 1' at position 5: expected ' ' then 1 more UE number, "
              "got end of text"),
    ("3  0 1 2", "dcm text '3  0 1 2' at position 2: expected UE (0..3), got ' '"),
    ("03 0 1 2", "dcm text '03 0 1 2' at position 0: UE 03 has a leading zero"),
    ("3 0 1 2 1", "dcm text '3 0 1 2 1' at position 7: expected end of text after 4 UE numbers, "
                  "got ' '"),
    ("  3,0 1 2", "dcm text '  3,0 1 2' at position 3: expected ' ' then 3 more UE numbers, "
                  "got ','"),
    ("", "dcm text '' at position 0: expected UE (0..3), got end of text"),
    ("\u0663 0 1 2", "dcm text '\u0663 0 1 2' at position 0: expected UE (0..3), got '\u0663'"),
    ("1 " + "9" * 30 + " 1 1",
     f"dcm text '1 {'9' * 30} 1 1' at position 2: UE 999999999999... is out of range 0..3"),
])
def test_strict_dcm_errors_name_text_position_and_expectation(text, message):
    with pytest.raises(ParseError) as err:
        parse_dcm(text, 4, 3)
    assert str(err.value) == message


@pytest.mark.parametrize("text, message", [
    ("1020 2", "follower text '1020 2' at position 2: expected bit 3 of 4 ('0' or '1'), got '2'"),
    ("1010 4", "follower text '1010 4' at position 5: UCM 4 is out of range 0..3"),
    ("10102", "follower text '10102' at position 4: expected ' ' then a UCM (0..3), got '2'"),
    ("1010 ", "follower text '1010 ' at position 4: expected ' ' then a UCM (0..3), "
              "got end of text"),
    ("101", "follower text '101' at position 3: expected bit 4 of 4 ('0' or '1'), "
            "got end of text"),
    ("1010 01", "follower text '1010 01' at position 5: UCM 01 has a leading zero"),
    ("1010 2 ok", "follower text '1010 2 ok' at position 6: expected end of text after the "
                  "bitmap and the UCM, got ' '"),
])
def test_strict_follower_errors_name_text_position_and_expectation(text, message):
    with pytest.raises(ParseError) as err:
        parse_follower(text, 4, 4)
    assert str(err.value) == message


def test_long_texts_are_cut_in_error_messages():
    with pytest.raises(ParseError) as err:
        parse_dcm("x" * 1000, 4, 3)
    assert str(err.value) == (f"dcm text {'x' * 120!r}... (1000 characters) at position 0: "
                              "expected UE (0..3), got 'x'")


def test_surrounding_whitespace_is_tolerated():
    assert parse_dcm("\n 3 0 1 2 \t", 4, 3).tolist() == [3, 0, 1, 2]
    bitmap, ucm = parse_follower(" 1010 2\n", 4, 4)
    assert bitmap.tolist() == [True, False, True, False] and ucm == 2


def test_lenient_reading_gives_the_no_op_and_flags_it():
    dcm, invalid = read_dcm("schedule UE1", 4, 3)
    assert dcm.tolist() == [0, 0, 0, 0] and invalid
    bitmap, ucm, invalid = read_follower("yes", 4, 4)
    assert bitmap.tolist() == [False] * 4 and ucm == 0 and invalid
    assert read_dcm("1 2 3 0", 4, 3)[1] is False


def test_format_rejects_negative_or_non_binary_input():
    with pytest.raises(ValueError, match="entries >= 0"):
        format_dcm(np.array([1, -1]))
    with pytest.raises(ValueError, match="entries 0 or 1"):
        format_follower(np.array([0, 2]), 1)


# --------------------------------------------------------------------- round trips and fuzzing
@st.composite
def dcm_case(draw):
    n_rbgs, n_ues = draw(st.integers(1, 10)), draw(st.integers(0, 120))
    dcm = draw(st.lists(st.integers(0, n_ues), min_size=n_rbgs, max_size=n_rbgs))
    return np.array(dcm, dtype=np.int64), n_ues


@st.composite
def follower_case(draw):
    n_rbgs, levels = draw(st.integers(1, 10)), draw(st.integers(1, 40))
    bits = draw(st.lists(st.booleans(), min_size=n_rbgs, max_size=n_rbgs))
    return np.array(bits), draw(st.integers(0, levels - 1)), levels


@given(dcm_case())
def test_dcm_format_parse_round_trip(case):
    dcm, n_ues = case
    text = format_dcm(dcm)
    assert parse_dcm(text, dcm.size, n_ues).tolist() == dcm.tolist()
    assert format_dcm(parse_dcm(text, dcm.size, n_ues)) == text


@given(follower_case())
def test_follower_format_parse_round_trip(case):
    bitmap, ucm, levels = case
    text = format_follower(bitmap, ucm)
    parsed_bitmap, parsed_ucm = parse_follower(text, bitmap.size, levels)
    assert parsed_bitmap.tolist() == bitmap.tolist() and parsed_ucm == ucm
    assert format_follower(parsed_bitmap, parsed_ucm) == text


near_valid = st.text(alphabet="0123456789 \t\n\u00a0\u0663-+x", max_size=30)
any_text = st.one_of(st.text(max_size=60), near_valid)


@settings(max_examples=300)
@given(any_text, st.integers(1, 6), st.integers(0, 12))
def test_strict_dcm_parsing_raises_only_parse_error(text, n_rbgs, n_ues):
    try:
        dcm = parse_dcm(text, n_rbgs, n_ues)
    except ParseError:
        return
    assert dcm.shape == (n_rbgs,) and 0 <= dcm.min() and dcm.max() <= n_ues
    assert format_dcm(dcm) == text.strip()  # a valid text is its own canonical form


@settings(max_examples=300)
@given(any_text, st.integers(1, 6), st.integers(1, 12))
def test_strict_follower_parsing_raises_only_parse_error(text, n_rbgs, levels):
    try:
        bitmap, ucm = parse_follower(text, n_rbgs, levels)
    except ParseError:
        return
    assert bitmap.shape == (n_rbgs,) and 0 <= ucm < levels
    assert format_follower(bitmap, ucm) == text.strip()


@settings(max_examples=300)
@given(any_text, st.integers(1, 6), st.integers(1, 12))
def test_lenient_reading_never_raises(text, n_rbgs, n):
    dcm, invalid_dcm = read_dcm(text, n_rbgs, n)
    bitmap, ucm, invalid_follower = read_follower(text, n_rbgs, n)
    assert dcm.shape == (n_rbgs,) and bitmap.shape == (n_rbgs,)
    if invalid_dcm:
        assert not dcm.any()
    if invalid_follower:
        assert not bitmap.any() and ucm == 0


def test_prompt_format_2_gives_every_follower_one_meta_prompt_and_old_runs_play_format_1():
    from textgame.config import ScenarioConfig
    from textgame.text_env import TextStackelbergEnv
    from trainers.policy.play_config import PlayConfig
    from trainers.stackelberg.config import StackelbergPPOConfig

    scenario = ScenarioConfig.from_dict({"cell": {"ue_counts": [3], "n_rbgs": 2,
                                                  "episode_ttis": 2}})
    systems = {}
    for fmt in (1, 2):
        env = TextStackelbergEnv(scenario, 1, TextConfig(prompt_format=fmt))
        env.reset(0)
        prompts = env.step_leader(["1 2"])
        observation = "\n".join(prompts[0].splitlines()[3:])  # after the 3-line meta-prompt
        systems[fmt] = {"\n".join(p.splitlines()[:3]) for p in prompts}
        assert observation.startswith("UE1 TTI 0" if fmt == 2 else "TTI 0")
    assert len(systems[1]) == 3 and len(systems[2]) == 1  # one meta-prompt for all UEs
    assert next(iter(systems[2])).startswith("You are a UE in an uplink cell")
    assert StackelbergPPOConfig().text_config().prompt_format == 2  # new runs
    old = PlayConfig.from_trainer_config({"history_ttis": 1})  # saved before the field
    assert old.prompt_format == 1
    assert PlayConfig.from_trainer_config({"prompt_format": 2}).prompt_format == 2
    with pytest.raises(ValueError, match=r"TextConfig.prompt_format = 3 is invalid; allowed: "
                                         r"one of \[1, 2\]"):
        TextConfig(prompt_format=3)
