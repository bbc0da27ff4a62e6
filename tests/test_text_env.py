"""The batched multi-turn text game (design §4): protocol, lenient/strict modes, numeric parity."""

import re

import numpy as np
import pytest

from textgame.config import CellConfig, ScenarioConfig, replace_checked
from textgame.game import StackelbergGame
from textgame.metrics import KPIS, EpisodeKPIs
from textgame.parsing import ParseError
from textgame.policies import make_follower, make_leader
from textgame.prompts import TextConfig
from textgame.text_env import TextStackelbergEnv


def scenario(**cell) -> ScenarioConfig:
    return ScenarioConfig(cell=replace_checked(CellConfig(), **cell))


def obedient_texts(env: TextStackelbergEnv, dcm_texts: list[str], ucm: int = 0) -> list[str]:
    """Follower texts that transmit exactly the DCM bits (the Dictator) with a fixed UCM."""
    texts = []
    for b, i in env.follower_slots:
        rank = int(env.game.rank[b, i])
        dcm = [int(a) for a in dcm_texts[b].split()]
        texts.append("".join("1" if a == rank else "0" for a in dcm) + f" {ucm}")
    return texts


# ---------------------------------------------------------------------------------- protocol
def test_reset_gives_one_leader_prompt_per_env_ending_with_the_cue():
    env = TextStackelbergEnv(None, 3)
    prompts = env.reset(0)
    assert len(prompts) == 3 and all(p.endswith("\nDCM:") for p in prompts)
    assert env.pending_prompts == prompts


def test_follower_prompts_follow_follower_slots_in_env_slot_order():
    env = TextStackelbergEnv(scenario(ue_counts=(2, 3, 4)), 4)
    env.reset(1)
    prompts = env.step_leader(["1 2 0 0"] * 4)
    active = env.game.sim.active
    assert env.follower_slots == [(b, i) for b in range(4) for i in range(4) if active[b, i]]
    assert len(prompts) == len(env.follower_slots)
    for (_, i), prompt in zip(env.follower_slots, prompts, strict=True):
        assert prompt.startswith(f"You are UE{i + 1} ") and prompt.endswith("\nAction:")


def test_wrong_numbers_of_texts_raise_naming_expected_and_got():
    env = TextStackelbergEnv(scenario(ue_counts=(3,)), 2)
    env.reset(0)
    with pytest.raises(ValueError, match=re.escape(
            "step_leader expects 2 texts (one DCM per env), got 1 texts")):
        env.step_leader(["1 2 3 0"])
    with pytest.raises(ValueError, match="step_leader expects 2 texts .*got a single str"):
        env.step_leader("1 2 3 0")
    env.step_leader(["1 2 3 0"] * 2)
    with pytest.raises(ValueError, match=re.escape(
            "step_followers expects 6 texts (one action per active UE, in follower_slots "
            "order), got 5 texts")):
        env.step_followers(["0000 0"] * 5)


def test_out_of_order_calls_raise():
    env = TextStackelbergEnv(scenario(episode_ttis=1), 1)
    with pytest.raises(RuntimeError, match="expects 'reset' next, not 'leader'"):
        env.step_leader(["0 0 0 0"])
    env.reset(0)
    with pytest.raises(RuntimeError, match="expects 'leader' next, not 'followers'"):
        env.step_followers([])
    followers = env.step_leader(["0 0 0 0"])
    with pytest.raises(RuntimeError, match="expects 'followers' next, not 'leader'"):
        env.step_leader(["0 0 0 0"])
    assert env.step_followers(["0000 0"] * len(followers)).done
    with pytest.raises(RuntimeError, match="expects 'reset' next, not 'leader'"):
        env.step_leader(["0 0 0 0"])


def test_render_callback_builds_every_prompt():
    calls = []

    def render(system: str, user: str) -> str:
        calls.append((system, user))
        return f"<system>{system}</system><user>{user}</user>"

    env = TextStackelbergEnv(scenario(ue_counts=(3,)), 2, render=render)
    leader = env.reset(0)
    followers = env.step_leader(["1 2 3 0"] * 2)
    assert len(calls) == 2 + 6
    for prompt, (system, user) in zip(leader + followers, calls, strict=True):
        assert prompt == f"<system>{system}</system><user>{user}</user>"
    assert calls[0][0].startswith("You are the base station") and calls[0][1].startswith("TTI 0")
    assert calls[2][0].startswith("You are UE1 ") and calls[2][1].endswith("Action:")


# -------------------------------------------------------------------------- lenient and strict
def test_garbage_texts_in_lenient_mode_are_all_invalid_and_the_episode_completes():
    env = TextStackelbergEnv(scenario(episode_ttis=20), 3)
    env.reset(5)
    ttis = 0
    while True:
        followers = env.step_leader(["I schedule UE1", "", "1 2 3 4 5 6"])
        step = env.step_followers(["transmit!"] * len(followers))
        ttis += 1
        assert step.info["invalid_leader"].all() and step.info["invalid_followers"].all()
        game_step = step.info["game_step"]
        assert not game_step.dcm.any() and not game_step.bitmap.any()  # the no-op was executed
        if step.done:
            break
    assert ttis == 20 and step.leader_prompts is None
    assert step.info["kpis"]["invalid_action_rate"].tolist() == [1.0, 1.0, 1.0]


def test_strict_mode_raises_naming_the_env_and_leaves_the_game_where_it_was():
    env = TextStackelbergEnv(scenario(ue_counts=(3,)), 2, TextConfig(strict=True))
    env.reset(0)
    with pytest.raises(ParseError) as err:
        env.step_leader(["1 2 3 0", "1 2 9 0"])
    assert str(err.value) == (
        "leader of env 1: dcm text '1 2 9 0' at position 4: UE 9 is out of range 0..3")
    followers = env.step_leader(["1 2 3 0", "1 2 3 0"])  # still the leader's turn
    texts = ["1000 0"] * len(followers)
    texts[4] = "1000 7"
    with pytest.raises(ParseError, match=re.escape(
            "follower of env 1, slot 1: follower text '1000 7' at position 5: UCM 7 is out of "
            "range 0..3")):
        env.step_followers(texts)
    texts[4] = "1000 3"
    step = env.step_followers(texts)
    assert not step.info["invalid_leader"].any() and not step.info["invalid_followers"].any()


def test_valid_texts_with_surrounding_whitespace_are_not_invalid():
    env = TextStackelbergEnv(scenario(ue_counts=(3,)), 1)
    env.reset(0)
    followers = env.step_leader([" 1 2 3 0\n"])
    step = env.step_followers(["\t1000 1 "] * len(followers))
    assert not step.info["invalid_leader"].any() and not step.info["invalid_followers"].any()
    assert step.info["game_step"].dcm.tolist() == [[1, 2, 3, 0]]


# ----------------------------------------------------------------------------- numeric parity
@pytest.mark.parametrize("leader_name, follower_name, cell", [
    ("max_weight", "dictator", {}),
    ("round_robin", "dictator", {"n_rbgs": 6}),
    ("random", "s_aloha", {"ue_counts": (2, 3, 4), "max_ues": 6, "join_prob": 0.1,
                           "leave_prob": 0.1}),
])
def test_formatted_heuristic_actions_reproduce_the_numeric_runner(leader_name, follower_name,
                                                                  cell):
    sc, b, seed = scenario(**cell), 4, 11
    game, env = StackelbergGame(sc, b), TextStackelbergEnv(sc, b, TextConfig(history_ttis=2))
    kpis = EpisodeKPIs(sc.cell, b)
    leader, follower = make_leader(leader_name, sc.cell), make_follower(follower_name)
    rng = np.random.default_rng(seed)
    leader.reset(b, sc.cell.max_ues, sc.cell.n_rbgs, rng)
    follower.reset(b, sc.cell.max_ues, sc.cell.n_rbgs, sc.cell.ucm_levels, rng)
    obs = game.reset(seed)
    env.reset(seed)
    while True:
        dcm = leader.act(obs)
        follower_obs = game.step_leader(dcm)
        env.step_leader(env.leader_texts(dcm))
        bitmap, ucm = follower.act(follower_obs)
        numeric = game.step_followers(bitmap, ucm)
        kpis.update(numeric)
        text = env.step_followers(env.follower_texts(bitmap, ucm))
        rows, cols = np.array(env.follower_slots).T
        np.testing.assert_array_equal(text.leader_rewards, numeric.leader_reward)
        np.testing.assert_array_equal(text.follower_rewards, numeric.follower_reward[rows, cols])
        assert text.done == numeric.done
        if numeric.done:
            break
        obs = numeric.leader_obs
    expected = kpis.result()
    assert set(text.info["kpis"]) == set(KPIS)
    for kpi in KPIS:
        np.testing.assert_array_equal(text.info["kpis"][kpi], expected[kpi], err_msg=kpi)
    assert (expected["invalid_action_rate"] == 0).all()


# ------------------------------------------------------------------------------------ history
def test_history_window_of_two_shows_exactly_the_last_two_ttis():
    sc = ScenarioConfig(cell=CellConfig(ue_counts=(3,), tbler=0.0))
    env = TextStackelbergEnv(sc, 1, TextConfig(history_ttis=2))
    prompts = env.reset(0)
    assert prompts[0].endswith("bsr 0\nDCM:")  # nothing to remember at TTI 0
    for t, dcm in enumerate(["1 0 0 0", "0 2 0 0", "0 0 2 0"]):
        env.step_leader([dcm])
        step = env.step_followers(obedient_texts(env, [dcm], ucm=t))
    leader_prompt = step.leader_prompts[0]
    assert "TTI 0:" not in leader_prompt
    assert leader_prompt.endswith(
        "\nTTI 1: DCM 0 2 0 0 outcome idle ok idle idle"
        "\nTTI 2: DCM 0 0 2 0 outcome idle idle ok idle\nDCM:")
    follower_prompts = env.step_leader(["0 0 0 0"])
    assert "TTI 0:" not in follower_prompts[1]
    assert follower_prompts[1].endswith(
        "\nTTI 1: DCM 0100 action 0100 1 outcome idle ok idle idle"
        "\nTTI 2: DCM 0010 action 0010 2 outcome idle idle ok idle\nAction:")
    assert follower_prompts[0].endswith(
        "\nTTI 1: DCM 0000 action 0000 1 outcome idle idle idle idle"
        "\nTTI 2: DCM 0000 action 0000 2 outcome idle idle idle idle\nAction:")


def test_history_records_the_executed_no_op_of_an_invalid_action():
    env = TextStackelbergEnv(scenario(ue_counts=(3,)), 1, TextConfig(history_ttis=1))
    env.reset(0)
    env.step_leader(["nonsense"])
    step = env.step_followers(["?"] * 3)
    assert "\nTTI 0: DCM 0 0 0 0 outcome idle idle idle idle\nDCM:" in step.leader_prompts[0]


# ---------------------------------------------------------------------------------- snapshots
def play(env: TextStackelbergEnv, rng: np.random.Generator, ttis: int) -> list:
    """Random valid and invalid texts for ``ttis`` TTIs; returns everything the env emitted."""
    out = []
    for _ in range(ttis):
        n = env.game.sim.active.sum(axis=1)
        dcm = [" ".join(str(int(a)) for a in rng.integers(0, k + 1, env.n_rbgs)) for k in n]
        dcm[0] = "junk" if rng.random() < 0.3 else dcm[0]
        followers = env.step_leader(dcm)
        texts = ["".join(map(str, rng.integers(0, 2, env.n_rbgs))) + f" {rng.integers(0, 4)}"
                 for _ in followers]
        step = env.step_followers(texts)
        out.append((followers, step.leader_rewards.tolist(), step.follower_rewards.tolist(),
                    step.leader_prompts, step.info["invalid_followers"].tolist()))
        if step.done:
            out.append({k: np.nan_to_num(v, nan=-1.0).tolist()
                        for k, v in step.info["kpis"].items()})
            break
    return out


@pytest.mark.parametrize("phase", ["leader", "followers"])
def test_state_dict_resumes_exactly(phase):
    sc = scenario(ue_counts=(2, 3, 4), max_ues=5, join_prob=0.2, leave_prob=0.2, episode_ttis=12)
    config = TextConfig(history_ttis=2)
    env = TextStackelbergEnv(sc, 3, config)
    env.reset(7)
    play(env, np.random.default_rng(0), 5)
    if phase == "followers":
        env.step_leader(["1 0 0 0"] * 3)
    state = env.state_dict()
    pending = env.pending_prompts

    def finish(e: TextStackelbergEnv) -> list:
        out = []
        if phase == "followers":
            step = e.step_followers(["1100 1"] * len(e.follower_slots))
            out.append((step.leader_rewards.tolist(), step.leader_prompts))
        return out + play(e, np.random.default_rng(1), 20)

    expected = finish(env)
    resumed = TextStackelbergEnv(sc, 3, config)
    resumed.load_state_dict(state)
    assert resumed.pending_prompts == pending
    assert finish(resumed) == expected
    assert isinstance(expected[-1], dict)  # the episode ran to its end, KPIs included
