"""The Stackelberg game over the simulator (design §2 steps 3-7): DCMs, utilities, turn order.

Expected utilities are written out from eqs. 2, 3 and 5 with explicit numbers. Deterministic set-ups
use tbler = 0, a channel that never changes and periodic traffic with P = 1 (one dPDU per TTI).
"""

from __future__ import annotations

import itertools
import re

import numpy as np
import pytest

from textgame.config import (
    CellConfig,
    ChannelConfig,
    RewardConfig,
    ScenarioConfig,
    TrafficConfig,
)
from textgame.game import StackelbergGame

D = 256
SE_POOR, SE_MEDIUM, SE_GOOD = 0.2344, 0.3770, 0.6016
C_BY_STATE = {0: 157, 1: 253, 2: 404}  # eq. 1: floor(672 * eta) for poor, medium, good
EVERY_TTI = {"models": ("periodic",), "period_ttis": 1}


def make_game(*, n_envs: int = 1, seed: int = 0, cell: dict | None = None,
              traffic: dict | None = None, channel: dict | None = None,
              reward: dict | None = None) -> StackelbergGame:
    cell = {"tbler": 0.0, **(cell or {})}
    channel = {"stay_prob": 1.0, **(channel or {})}
    scenario = ScenarioConfig(cell=CellConfig(**cell),
                              traffic=TrafficConfig(**(traffic or EVERY_TTI)),
                              channel=ChannelConfig(**channel),
                              reward=RewardConfig(**(reward or {})))
    game = StackelbergGame(scenario, n_envs)
    game.reset(seed)
    return game


def same_se(se: float) -> dict:
    return {"spectral_efficiency": (se, se, se)}


def bits(*rows: str) -> np.ndarray:
    """One environment's bitmaps from strings, one per UE slot: (1, I_max, N)."""
    return np.array([[[c == "1" for c in row] for row in rows]])


def no_ucm(game: StackelbergGame) -> np.ndarray:
    return np.zeros((game.n_envs, game.max_ues), dtype=np.int64)


# ----------------------------------------------------------------------- eqs. 2, 3 and 5
def test_utilities_of_two_ttis_match_eqs_2_3_and_5():
    # N = 4, three UEs, every RBG carries 404 bits (eta = 0.6016), each UE holds one dPDU
    game = make_game(cell={"ue_counts": (3,)}, channel=same_se(SE_GOOD))
    game.step_leader(np.array([[1, 2, 0, 3]]))  # d_1 = 1000, d_2 = 0100, d_3 = 0001
    step = game.step_followers(bits("1000", "0110", "0011"), no_ucm(game))
    # RBG 0: UE1 alone; RBG 1: UE2 alone; RBG 2: UE2 and UE3 collide; RBG 3: UE3 alone.
    # Each UE delivers min(404, 256) = 256 bits = 1 dPDU.
    assert step.report.delivered_bits.tolist() == [[256, 256, 256]]
    f1 = 0.5 * min(1, 1 / 1) + 0.5 * (1 - 0 / 4)  # obeys the DCM: 1.0
    f2 = 0.5 * min(1, 1 / 2) + 0.5 * (1 - 1 / 4)  # two attempts, one extra RBG: 0.625
    f3 = 0.5 * min(1, 1 / 2) + 0.5 * (1 - 1 / 4)
    np.testing.assert_allclose(step.follower_reward, [[f1, f2, f3]], rtol=0, atol=1e-15)
    assert step.served_rbgs.tolist() == [[1, 1, 1]]
    leader = 0.5 * (3 * 256) / (4 * 404) + 0.5 * 3 ** 2 / (3 * (1 + 1 + 1))
    np.testing.assert_allclose(step.leader_reward, [leader], rtol=0, atol=1e-15)

    # TTI 1: each buffer holds the dPDU that arrived at t = 1. Only UE1 sends, on RBGs 0 and 2.
    game.step_leader(np.array([[1, 1, 0, 0]]))  # d_1 = 1100, d_2 = d_3 = 0000
    step = game.step_followers(bits("1010", "0000", "0000"), no_ucm(game))
    assert step.report.delivered_bits.tolist() == [[256, 0, 0]]
    assert step.report.carried_rbgs.tolist() == [[1, 0, 0]]  # ceil(256 / 404) = 1
    f1 = 0.5 * min(1, 1 / 2) + 0.5 * (1 - 2 / 4)  # 0.5
    f_silent = 0.5 * min(1, 0 / 1) + 0.5 * (1 - 0 / 4)  # 0.5
    np.testing.assert_allclose(step.follower_reward, [[f1, f_silent, f_silent]], rtol=0,
                               atol=1e-15)
    assert step.served_rbgs.tolist() == [[2, 1, 1]]
    leader = 0.5 * 256 / (4 * 404) + 0.5 * (2 + 1 + 1) ** 2 / (3 * (4 + 1 + 1))
    np.testing.assert_allclose(step.leader_reward, [leader], rtol=0, atol=1e-15)


def test_delivery_ratio_counts_partial_dpdus_when_an_rbg_is_smaller_than_a_dpdu():
    # one RBG of 157 bits sends 157/256 of a dPDU; two RBGs send the whole buffered dPDU
    game = make_game(cell={"ue_counts": (1,)}, channel=same_se(SE_POOR))
    state = game.state_dict()
    for row, (rx, tx, hamming) in {"1000": (157 / 256, 1, 0), "1100": (1.0, 2, 1),
                                   "1110": (1.0, 3, 2)}.items():
        game.load_state_dict(state)
        game.step_leader(np.array([[1, 0, 0, 0]]))
        step = game.step_followers(bits(row), no_ucm(game))
        expected = 0.5 * min(1.0, rx / tx) + 0.5 * (1 - hamming / 4)
        assert step.follower_reward[0, 0] == pytest.approx(expected, abs=1e-15)


def test_delivery_ratio_is_capped_at_one():
    # two dPDUs buffered at t = 1; one RBG of 404 bits delivers 404/256 = 1.58 dPDUs
    game = make_game(cell={"ue_counts": (1,)}, channel=same_se(SE_GOOD))
    game.step_leader(np.array([[0, 0, 0, 0]]))
    game.step_followers(bits("0000"), no_ucm(game))
    game.step_leader(np.array([[0, 0, 0, 0]]))
    step = game.step_followers(bits("0001"), no_ucm(game))
    assert step.report.delivered_bits[0, 0] == 404
    assert step.follower_reward[0, 0] == pytest.approx(0.5 * 1.0 + 0.5 * (1 - 1 / 4))


def test_leader_normalises_throughput_by_the_best_se_capacity():
    # default SEs, a channel frozen in a state drawn uniformly: c_max = 404 whatever the state
    game = make_game(n_envs=60, seed=1, cell={"ue_counts": (1,)},
                     channel={"initial": "uniform"})
    states = game.sim.channel.state[:, 0].tolist()
    assert set(states) == {0, 1, 2}
    game.step_leader(np.tile([1, 1, 0, 0], (60, 1)))
    step = game.step_followers(np.tile(bits("1000"), (60, 1, 1)), no_ucm(game))
    for env, q in enumerate(states):
        delivered = min(C_BY_STATE[q], 256)
        assert step.report.delivered_bits[env, 0] == delivered
        assert step.leader_reward[env] == pytest.approx(0.5 * delivered / (4 * 404) + 0.5 * 1.0)
        follower = 0.5 * min(1, delivered / 256) + 0.5 * (1 - 1 / 4)
        assert step.follower_reward[env, 0] == pytest.approx(follower)


def test_weights_of_the_utilities_come_from_the_reward_config():
    game = make_game(cell={"ue_counts": (2,)}, channel=same_se(SE_GOOD),
                     reward={"omega1": 0.9, "omega2": 0.1, "fairness_weight": 0.2})
    game.step_leader(np.array([[1, 0, 0, 0]]))
    step = game.step_followers(bits("1000", "0100"), no_ucm(game))
    # UE1 obeys and delivers its dPDU; UE2 was told nothing but sent alone on RBG 1
    f1 = 0.9 * 1.0 + 0.1 * 1.0
    f2 = 0.9 * 1.0 + 0.1 * (1 - 1 / 4)
    np.testing.assert_allclose(step.follower_reward, [[f1, f2]], rtol=0, atol=1e-15)
    leader = 0.8 * 512 / (4 * 404) + 0.2 * 1.0
    assert step.leader_reward[0] == pytest.approx(leader, abs=1e-15)


def test_leader_utility_is_zero_when_nothing_is_served():
    game = make_game(n_envs=2, cell={"ue_counts": (3,)})
    game.step_leader(np.zeros((2, 4), dtype=np.int64))
    step = game.step_followers(np.zeros((2, 3, 4)), no_ucm(game))
    assert step.leader_reward.tolist() == [0.0, 0.0]  # throughput 0 and JFI 0 by convention


def test_padding_serves_nothing_so_the_leader_utility_stays_zero():
    game = make_game(cell={"ue_counts": (2,)}, traffic={"bernoulli_rates": (0.0,)})
    game.step_leader(np.array([[1, 2, 0, 0]]))
    step = game.step_followers(bits("1000", "0100"), no_ucm(game))
    assert step.report.successes.tolist() == [[1, 1]]
    assert step.served_rbgs.tolist() == [[0, 0]]
    assert step.leader_reward[0] == 0.0
    # rx = 0 of tx = 1, full consistency
    np.testing.assert_allclose(step.follower_reward, [[0.5, 0.5]], rtol=0, atol=0)


def test_inactive_slots_get_zero_follower_utility():
    game = make_game(cell={"ue_counts": (1,), "max_ues": 3})
    game.step_leader(np.array([[1, 0, 0, 0]]))
    step = game.step_followers(bits("1000", "1111", "0000"), no_ucm(game))
    assert step.follower_reward[0, 1:].tolist() == [0.0, 0.0]
    assert step.bitmap[0, 1].tolist() == [False] * 4


# ---------------------------------------------------------------------- DCM -> intended bits
def test_dcm_entry_names_the_rank_of_an_active_ue_and_zero_names_nobody():
    game = make_game(cell={"ue_counts": (3,), "max_ues": 5})
    state = game.state_dict()
    state["sim"]["active"] = np.array([[True, False, True, True, False]])
    game.load_state_dict(state)
    assert game.rank.tolist() == [[1, 0, 2, 3, 0]]
    obs = game.step_leader(np.array([[3, 0, 1, 2]]))
    assert obs.dcm_bits[0].astype(int).tolist() == [
        [0, 0, 1, 0],  # slot 0, rank 1: RBG 2
        [0, 0, 0, 0],  # inactive
        [0, 0, 0, 1],  # slot 2, rank 2: RBG 3
        [1, 0, 0, 0],  # slot 3, rank 3: RBG 0
        [0, 0, 0, 0],  # inactive
    ]


def test_dcm_can_give_one_ue_several_rbgs():
    game = make_game(cell={"ue_counts": (2,)})
    obs = game.step_leader(np.array([[2, 2, 0, 2]]))
    assert obs.dcm_bits[0].astype(int).tolist() == [[0, 0, 0, 0], [1, 1, 0, 1]]


@pytest.mark.parametrize("entry", [-1, -7, 4, 9])
def test_dcm_entry_outside_zero_to_i_t_is_rejected_naming_the_value(entry):
    game = make_game(cell={"ue_counts": (3,)})
    with pytest.raises(ValueError, match=rf"dcm\[0, 2\] = {entry} is invalid"):
        game.step_leader(np.array([[1, 0, entry, 3]]))


def test_dcm_bound_is_the_number_of_active_ues_of_each_environment():
    game = make_game(n_envs=2, cell={"ue_counts": (3,), "max_ues": 5})
    state = game.state_dict()
    state["sim"]["active"] = np.array([[True] * 5, [True, True, False, False, False]])
    game.load_state_dict(state)
    with pytest.raises(ValueError, match=r"dcm\[1, 0\] = 3"):
        game.step_leader(np.array([[5, 5, 5, 5], [3, 0, 0, 0]]))


@pytest.mark.parametrize("dcm", [np.zeros((1, 3), dtype=int), np.zeros((4,), dtype=int),
                                 np.zeros((2, 4), dtype=int), np.zeros((1, 4)),
                                 np.zeros((1, 4), dtype=bool)])
def test_dcm_of_the_wrong_shape_or_dtype_is_rejected(dcm):
    game = make_game()
    with pytest.raises(ValueError, match="dcm has shape"):
        game.step_leader(dcm)


@pytest.mark.parametrize("value", [-1, 4, 10])
def test_ucm_outside_zero_to_k_minus_one_is_rejected_naming_the_value(value):
    game = make_game(cell={"ue_counts": (2,)})
    game.step_leader(np.array([[1, 2, 0, 0]]))
    with pytest.raises(ValueError) as info:
        game.step_followers(bits("1000", "0100"), np.array([[0, value]]))
    named, _, allowed = str(info.value).partition("allowed")
    assert "ucm" in named and re.search(rf"(?<![\d-]){value}(?!\d)", named), named
    assert allowed


def test_ucm_of_the_wrong_shape_is_rejected():
    game = make_game(cell={"ue_counts": (2,)})
    game.step_leader(np.array([[1, 2, 0, 0]]))
    with pytest.raises(ValueError, match="ucm has shape"):
        game.step_followers(bits("1000", "0100"), np.array([0, 0]))


def test_bitmap_of_the_wrong_shape_is_rejected():
    game = make_game(cell={"ue_counts": (2,)})
    game.step_leader(np.array([[1, 2, 0, 0]]))
    with pytest.raises(ValueError, match="bitmap has shape"):
        game.step_followers(np.zeros((1, 2, 3)), no_ucm(game))


def test_ucm_reaches_the_leader_at_the_next_tti():
    game = make_game(cell={"ue_counts": (3,), "max_ues": 4})
    game.step_leader(np.zeros((1, 4), dtype=np.int64))
    step = game.step_followers(np.zeros((1, 4, 4)), np.array([[3, 0, 2, 0]]))
    assert step.leader_obs.ucm.tolist() == [[3, 0, 2, 0]]
    assert step.leader_obs.t == 1


def test_rejected_action_leaves_the_turn_unchanged():
    game = make_game(cell={"ue_counts": (2,)})
    with pytest.raises(ValueError):
        game.step_leader(np.array([[3, 0, 0, 0]]))
    game.step_leader(np.array([[1, 0, 0, 0]]))
    with pytest.raises(ValueError):
        game.step_followers(bits("1000", "0000"), np.array([[0, 5]]))
    step = game.step_followers(bits("1000", "0000"), no_ucm(game))
    assert step.report.t == 0


# ------------------------------------------------------------------------------ turn order
def test_steps_before_reset_are_refused():
    game = StackelbergGame(ScenarioConfig())
    with pytest.raises(RuntimeError):
        game.step_leader(np.zeros((1, 4), dtype=np.int64))
    with pytest.raises(RuntimeError):
        game.step_followers(np.zeros((1, 5, 4)), np.zeros((1, 5), dtype=np.int64))


def test_followers_cannot_act_before_the_leader():
    game = make_game()
    with pytest.raises(RuntimeError):
        game.step_followers(np.zeros((1, 5, 4)), np.zeros((1, 5), dtype=np.int64))


def test_leader_cannot_act_twice_in_a_tti():
    game = make_game()
    game.step_leader(np.zeros((1, 4), dtype=np.int64))
    with pytest.raises(RuntimeError):
        game.step_leader(np.zeros((1, 4), dtype=np.int64))


def test_no_step_after_the_episode_ends_until_reset():
    game = make_game(cell={"episode_ttis": 2, "ue_counts": (1,)})
    for _ in range(2):
        game.step_leader(np.zeros((1, 4), dtype=np.int64))
        step = game.step_followers(np.zeros((1, 1, 4)), no_ucm(game))
    assert step.done and step.leader_obs is None
    with pytest.raises(RuntimeError):
        game.step_leader(np.zeros((1, 4), dtype=np.int64))
    obs = game.reset(0)
    assert obs.t == 0


# ------------------------------------------------------------------- potential game (eq. 26)
def stage_game(game: StackelbergGame, dcm: np.ndarray):
    """Utilities of every bitmap profile of one TTI, replayed from a snapshot after the DCM."""
    game.step_leader(dcm)
    snapshot = game.state_dict()

    def play(profile: tuple[str, ...]) -> np.ndarray:
        game.load_state_dict(snapshot)
        return game.step_followers(bits(*profile), no_ucm(game)).follower_reward[0]

    return play


def unilateral_deviations(strategies: list[str], n_players: int):
    for profile in itertools.product(strategies, repeat=n_players):
        for i in range(n_players):
            for alternative in strategies:
                if alternative != profile[i]:
                    yield profile, i, profile[:i] + (alternative,) + profile[i + 1:]


def hamming(a: str, b: str) -> int:
    return sum(x != y for x, y in zip(a, b, strict=True))


def test_consistency_term_alone_is_an_exact_potential_over_all_bitmaps():
    # omega1 = 0: F_i = S(b_i, d_i) and Phi = sum_i S(b_i, d_i), eq. 3
    game = make_game(cell={"ue_counts": (3,), "n_rbgs": 3}, channel=same_se(SE_MEDIUM),
                     reward={"omega1": 0.0, "omega2": 1.0})
    intended = ["001", "100", "000"]  # from the DCM (2, 0, 1)
    play = stage_game(game, np.array([[2, 0, 1]]))
    bitmaps = ["".join(b) for b in itertools.product("01", repeat=3)]
    utility = {p: play(p) for p in itertools.product(bitmaps, repeat=3)}

    def phi(profile):
        return sum(1 - hamming(b, d) / 3 for b, d in zip(profile, intended, strict=True))

    for before, i, after in unilateral_deviations(bitmaps, 3):
        change = utility[after][i] - utility[before][i]
        assert change == pytest.approx(phi(after) - phi(before), abs=1e-12)


def test_single_rbg_stage_game_has_the_occupied_rbg_potential():
    # Every UE holds one dPDU and every RBG carries 253 bits, so a lone transmission is worth
    # a = min(1, (253/256) / 1) to its sender and a collision 0: a congestion game with payoff
    # f(1) = a, f(k >= 2) = 0 per RBG. Its Rosenthal potential is
    #   Phi = omega1 * a * #(RBGs with at least one transmitter) + omega2 * sum_i S(b_i, d_i).
    game = make_game(cell={"ue_counts": (3,), "n_rbgs": 3}, channel=same_se(SE_MEDIUM))
    intended = ["001", "100", "000"]
    play = stage_game(game, np.array([[2, 0, 1]]))
    strategies = ["000", "100", "010", "001"]  # silent or exactly one RBG
    utility = {p: play(p) for p in itertools.product(strategies, repeat=3)}
    a = min(1.0, (253 / 256) / 1)

    def phi(profile):
        occupied = sum(any(b[n] == "1" for b in profile) for n in range(3))
        consistency = sum(1 - hamming(b, d) / 3 for b, d in zip(profile, intended, strict=True))
        return 0.5 * a * occupied + 0.5 * consistency

    for before, i, after in unilateral_deviations(strategies, 3):
        change = utility[after][i] - utility[before][i]
        assert change == pytest.approx(phi(after) - phi(before), abs=1e-12)


def test_a_deviation_onto_a_lone_rbg_changes_the_throughput_of_another_ue():
    # Why "system throughput" is no exact potential: UE1 joins UE2's lone RBG. UE1's delivery
    # term stays 0 (silent -> collided), yet the system throughput drops by UE2's 253 bits.
    game = make_game(cell={"ue_counts": (2,), "n_rbgs": 1}, channel=same_se(SE_MEDIUM))
    game.step_leader(np.array([[2]]))
    snapshot = game.state_dict()
    before = game.step_followers(bits("0", "1"), no_ucm(game))
    game.load_state_dict(snapshot)
    after = game.step_followers(bits("1", "1"), no_ucm(game))
    assert before.report.delivered_bits.tolist() == [[0, 253]]
    assert after.report.delivered_bits.tolist() == [[0, 0]]
    delivery_term = 0.5 * min(1, 0 / 1)  # UE1, before and after
    consistency_change = 0.5 * ((1 - 1 / 1) - (1 - 0 / 1))  # d_1 = 0, b_1: 0 -> 1
    assert after.follower_reward[0, 0] - before.follower_reward[0, 0] == pytest.approx(
        delivery_term - delivery_term + consistency_change)


def test_eq2_stage_game_has_no_exact_potential_when_lone_payoffs_differ():
    # N = 1, d = 0 for both. UE1 holds a dPDU (a_1 = min(1, 256/256) = 1), UE2 has an empty
    # buffer (padding, a_2 = 0). Around the cycle (0,0) -> (1,0) -> (1,1) -> (0,1) -> (0,0) the
    # deviators' utility changes sum to omega1 * (a_1 - a_2) = 0.5; an exact potential would
    # make every such sum 0 (Monderer and Shapley), so none exists for these utilities.
    game = make_game(cell={"ue_counts": (2,), "n_rbgs": 1}, channel=same_se(SE_GOOD),
                     traffic={"bernoulli_rates": (1.0, 0.0)})
    play = stage_game(game, np.array([[0]]))
    cycle = [("0", "0"), ("1", "0"), ("1", "1"), ("0", "1"), ("0", "0")]
    deviator = [0, 1, 0, 1]
    total = sum(play(cycle[k + 1])[i] - play(cycle[k])[i] for k, i in enumerate(deviator))
    assert total == pytest.approx(0.5 * (1.0 - 0.0), abs=1e-12)
