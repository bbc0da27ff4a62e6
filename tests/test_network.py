"""The hyper-cellular network (textgame.network): partitions, edge UEs, conservation, C = 1.

Deterministic cases use tbler = 0 and a channel that never changes with one spectral efficiency
for all states, so one RBG carries exactly C_GOOD bits (eq. 1).
"""

from __future__ import annotations

import numpy as np
import pytest

from textgame.config import CellConfig, ChannelConfig, ConfigError, ScenarioConfig, TrafficConfig
from textgame.game import StackelbergGame
from textgame.network import NetworkGame
from textgame.network_config import NetworkConfig, cell_views
from textgame.network_metrics import play_network, run_network_episodes
from textgame.partition import PARTITIONS, block_layout, make_partition, proportional_shares
from textgame.policies import LeaderPolicy, make_follower, make_leader

D = 256
C_GOOD = 404  # floor(672 * 0.6016)
FIXED_GOOD = {"spectral_efficiency": (0.6016,) * 3, "stay_prob": 1.0}


def scenario(cell=None, traffic=None, channel=None) -> ScenarioConfig:
    return ScenarioConfig(cell=CellConfig(**(cell or {})), traffic=TrafficConfig(**(traffic or {})),
                          channel=ChannelConfig(**(channel or {})))


def static_network(initial_dpdus: int, n_cells: int = 2, **fields) -> NetworkConfig:
    """No arrivals beyond ``initial_dpdus`` per UE, no erasures, every RBG carries C_GOOD bits."""
    s = scenario({"tbler": 0.0, "episode_ttis": 3},
                 {"bernoulli_rates": (0.0,), "initial_dpdus": initial_dpdus}, FIXED_GOOD)
    return NetworkConfig(scenario=s, n_cells=n_cells, **fields)


class FixedLeader(LeaderPolicy):
    """Emits the same DCM (B*C, N_view) every TTI."""

    def __init__(self, dcm: np.ndarray) -> None:
        self.dcm = np.asarray(dcm)

    def act(self, obs) -> np.ndarray:
        return self.dcm


def play_one_tti(game: NetworkGame, dcm: np.ndarray):
    game.reset(0)
    dictator = make_follower("dictator")
    dictator.reset(game.n_envs, game.max_ues, game.n_rbgs, game.ucm_levels,
                   np.random.default_rng(0))
    return game.step_followers(*dictator.act(game.step_leader(dcm)))


# ------------------------------------------------------------------------------- topology
def test_ring_cells_list_locals_then_own_edge_ue_then_the_neighbours():
    view_ue, home = cell_views(NetworkConfig(n_cells=3, local_ues=2))
    # locals 0..5 (two per cell), edge UE e = 6 + e shared by cells e and e+1 mod 3
    assert view_ue.tolist() == [[0, 1, 6, 8], [2, 3, 7, 6], [4, 5, 8, 7]]
    assert home.tolist() == [[True, True, True, False]] * 3


def test_line_end_cells_have_one_edge_ue_and_a_one_cell_ring_keeps_its_edge_ue_once():
    view_ue, home = cell_views(NetworkConfig(n_cells=3, local_ues=1, topology="line"))
    assert view_ue.tolist() == [[0, 3, -1], [1, 4, 3], [2, 4, -1]]
    assert home.tolist() == [[True, True, False], [True, True, False], [True, False, False]]
    view_ue, home = cell_views(NetworkConfig(n_cells=1, local_ues=4))
    assert view_ue.tolist() == [[0, 1, 2, 3, 4]] and home.all()


def test_pool_grows_with_the_cells_and_ues_number_five_per_ring_cell():
    config = NetworkConfig(n_cells=8)
    assert (config.pool_rbgs, config.n_ues, config.share_cap) == (32, 40, 8)
    assert NetworkConfig(n_cells=8, topology="line").n_ues == 39


# ----------------------------------------------------------------------------- partitions
def test_equal_partition_gives_the_remainder_to_the_first_cells():
    shares = make_partition("equal").shares(np.zeros((2, 4)), 10, 8, None)
    assert shares.tolist() == [[3, 3, 2, 2]] * 2


def test_proportional_partition_follows_demand_within_the_cap():
    assert proportional_shares(np.array([[3.0, 1.0]]), 8, 8).tolist() == [[6, 2]]
    assert proportional_shares(np.array([[3.0, 1.0]]), 8, 5).tolist() == [[5, 3]]
    # quotas 8/3 each: floors 2, the two RBGs left go to the lowest cells
    assert proportional_shares(np.ones((1, 3)), 8, 8).tolist() == [[3, 3, 2]]
    # no demand anywhere: equal weights; demand in one cell only: it takes the cap
    assert proportional_shares(np.zeros((1, 2)), 8, 8).tolist() == [[4, 4]]
    assert proportional_shares(np.array([[0.0, 5.0, 0.0]]), 12, 6).tolist() == [[3, 6, 3]]


@pytest.mark.parametrize("name", sorted(PARTITIONS))
def test_partitions_are_disjoint_and_cover_the_pool(name):
    rng = np.random.default_rng(0)
    demand = rng.integers(0, 20, size=(50, 6)).astype(float)
    policy = make_partition(name)
    shares = policy.shares(demand, 24, 7, rng)  # (B, C)
    assert (shares.sum(axis=1) == 24).all() and shares.max() <= 7 and shares.min() >= 0
    layout = block_layout(shares, policy.max_share(24, 6, 7))  # (B, C, N_view)
    for row in layout:
        owned = np.sort(row[row >= 0])
        assert owned.tolist() == list(range(24))  # every pool RBG exactly once


def test_random_partition_draws_fresh_shares():
    shares = make_partition("random").shares(np.zeros((200, 4)), 16, 8, np.random.default_rng(1))
    assert len({tuple(r) for r in shares.tolist()}) > 10


def test_an_unknown_partition_name_is_refused():
    with pytest.raises(ValueError, match="'greedy' is unknown; allowed: \\['equal', "):
        make_partition("greedy")


# ------------------------------------------------------------------------------ edge UEs
def test_an_edge_ue_granted_by_both_dbss_delivers_its_bits_once_home_rbgs_first():
    game = NetworkGame(static_network(initial_dpdus=2), 1)  # ring of 2, N = 4 per cell
    assert game.view_ue.tolist() == [[0, 1, 2, 3, 8, 9], [4, 5, 6, 7, 9, 8]]
    # cell 0 grants its RBG 0 to its own edge UE 8 (rank 5); cell 1 grants UE 8 (rank 6) too
    step = play_one_tti(game, np.array([[5, 0, 0, 0], [6, 0, 0, 0]]))
    r = step.report
    assert r.delivered_bits[0, 8] == 2 * D  # 512 buffered bits, 2 * 404 capacity: once
    assert r.successes[0, 8] == 2 and r.completed_dpdus[0, 8] == 2
    assert r.cell_delivered_bits[0, 4] == C_GOOD  # home cell's RBG first
    assert r.cell_delivered_bits[1, 5] == 2 * D - C_GOOD  # the neighbour's RBG: the rest
    assert r.cell_carried[0, 4] == 1 and r.cell_carried[1, 5] == 1
    assert r.cell_delivered_bits.sum() == r.delivered_bits.sum() == 2 * D


def test_an_edge_ue_with_less_than_one_rbg_of_data_pads_its_neighbour_rbg():
    game = NetworkGame(static_network(initial_dpdus=1), 1)
    r = play_one_tti(game, np.array([[5, 0, 0, 0], [6, 0, 0, 0]])).report
    assert r.delivered_bits[0, 8] == D and r.cell_delivered_bits[0, 4] == D
    assert r.cell_delivered_bits[1, 5] == 0 and r.cell_carried[1, 5] == 0  # padding
    assert r.attempts[0, 8] == 2


def test_rbgs_beyond_a_cells_share_are_not_executed():
    config = static_network(initial_dpdus=3, n_cells=2, partition="proportional",
                            max_share_rbgs=6)
    game = NetworkGame(config, 1)
    assert game.n_rbgs == 6  # N_view = the cap; at t = 0 no reports: equal shares of 4
    r = play_one_tti(game, np.array([[1, 2, 3, 4, 1, 2], [1, 2, 3, 4, 1, 2]])).report
    assert r.shares.tolist() == [[4, 4]]
    assert not r.transmitted[:, :, 4:].any()
    assert r.delivered_bits[0, :8].tolist() == [C_GOOD] * 8  # one RBG each, 768 bits buffered


@pytest.mark.parametrize("follower", ["dictator", "s_aloha", "random"])
def test_bits_are_conserved_per_ue_across_cells(follower):
    config = NetworkConfig(scenario=scenario({"episode_ttis": 30, "buffer_dpdus": 5}),
                           n_cells=3, partition="proportional")
    game = NetworkGame(config, 4)
    leader, fol = make_leader("max_weight", config.scenario.cell), make_follower(follower)
    rng = np.random.default_rng(2)
    leader.reset(game.n_envs, game.max_ues, game.n_rbgs, rng)
    fol.reset(game.n_envs, game.max_ues, game.n_rbgs, game.ucm_levels, rng)
    obs, accepted, delivered = game.reset(5), 0, 0
    while True:
        accepted = accepted + (game.sim.arrived_dpdus - game.sim.dropped_dpdus) * D
        step = game.step_followers(*fol.act(game.step_leader(leader.act(obs))))
        r = step.report
        credited = game.to_ues(r.cell_delivered_bits, True) + game.to_ues(
            r.cell_delivered_bits, False)
        np.testing.assert_array_equal(credited, r.delivered_bits)  # each bit in one cell
        delivered = delivered + r.delivered_bits
        if step.done:
            break
        obs = step.leader_obs
    np.testing.assert_array_equal(accepted, delivered + game.sim.buffers.bits)
    assert delivered[:, game.is_edge].sum() > 0


# ------------------------------------------------------------------ the single-cell limit
@pytest.mark.parametrize("pair", [("max_weight", "dictator"), ("random", "s_aloha"),
                                  ("round_robin", "random")])
@pytest.mark.parametrize("partition", ["equal", "random"])
def test_one_cell_without_edge_ue_is_the_single_cell_game(pair, partition):
    s = scenario({"ue_counts": (4,), "episode_ttis": 20})
    runs = []
    for game in (StackelbergGame(s, 6), NetworkGame(
            NetworkConfig(scenario=s, n_cells=1, edge_ues=False, partition=partition), 6)):
        leader, follower = make_leader(pair[0], s.cell), make_follower(pair[1])
        rng = np.random.default_rng(3)
        leader.reset(game.n_envs, game.max_ues, game.n_rbgs, rng)
        follower.reset(game.n_envs, game.max_ues, game.n_rbgs, s.cell.ucm_levels, rng)
        obs, steps = game.reset(11), []
        while True:
            steps.append(game.step_followers(*follower.act(game.step_leader(leader.act(obs)))))
            if steps[-1].done:
                break
            obs = steps[-1].leader_obs
        runs.append(steps)
    for single, network in zip(*runs, strict=True):
        np.testing.assert_array_equal(single.report.delivered_bits, network.report.delivered_bits)
        np.testing.assert_array_equal(single.report.rbg_outcome, network.report.rbg_outcome)
        np.testing.assert_array_equal(single.leader_reward, network.leader_reward)
        np.testing.assert_array_equal(single.follower_reward, network.follower_reward)


def test_proportional_shares_follow_the_dbss_reported_demand():
    config = NetworkConfig(scenario=scenario({"episode_ttis": 6}), n_cells=4,
                           partition="proportional")
    game = NetworkGame(config, 3)
    idle, dictator = make_leader("idle"), make_follower("dictator")  # nobody sends: queues grow
    idle.reset(game.n_envs, game.max_ues, game.n_rbgs, None)
    dictator.reset(game.n_envs, game.max_ues, game.n_rbgs, game.ucm_levels, None)
    obs, checked = game.reset(1), 0
    while obs is not None:
        demand = obs.queue_report.reshape(3, 4, -1).sum(axis=-1)  # (B, C) BSRs per DBS
        share = obs.rbg_share.reshape(3, 4)
        np.testing.assert_array_equal(share, proportional_shares(demand.astype(float), 16, 8))
        more = demand[:, :, None] > demand[:, None, :]  # cell a reported more than cell b
        assert (share[:, :, None] >= share[:, None, :])[more].all()
        checked += int(more.any() and (share[:, :, None] > share[:, None, :])[more].any())
        obs = game.step_followers(*dictator.act(game.step_leader(idle.act(obs)))).leader_obs
    assert checked >= 3


# ----------------------------------------------------------------------------------- KPIs
def test_network_kpis_of_a_hand_computed_tti():
    game = NetworkGame(static_network(initial_dpdus=2), 1)
    leader = FixedLeader(np.array([[5, 0, 0, 0], [6, 0, 0, 0]]))
    kpis = play_network(game, leader, make_follower("dictator"), seed=0)
    seconds = 3 * 0.5e-3  # T = 3 TTIs; only the edge UE 8 delivers, 512 bits in TTI 0
    out = kpis.result()
    assert out["network_throughput_mbps"][0] == pytest.approx(2 * D / seconds / 1e6)
    assert out["edge_ue_throughput_mbps"][0] == pytest.approx(2 * D / seconds / 1e6 / 2)
    assert out["local_ue_throughput_mbps"][0] == 0
    assert out["fairness_ues"][0] == pytest.approx(1 / 10)  # one UE of ten served
    cells = kpis.cell_result()["throughput_mbps"][0] * seconds * 1e6
    assert cells == pytest.approx([C_GOOD, 2 * D - C_GOOD])
    assert out["fairness_cells"][0] == pytest.approx(
        (2 * D) ** 2 / (2 * (C_GOOD ** 2 + (2 * D - C_GOOD) ** 2)))


def test_run_network_episodes_gives_one_value_per_episode_and_cell():
    config = NetworkConfig(scenario=scenario({"episode_ttis": 5}), n_cells=2)
    out, cells = run_network_episodes(config, make_leader("round_robin"),
                                      make_follower("dictator"), episodes=5, n_networks=2)
    assert out["network_throughput_mbps"].shape == (5,)
    assert cells["throughput_mbps"].shape == (5, 2)
    np.testing.assert_allclose(cells["throughput_mbps"].sum(axis=1),
                               out["network_throughput_mbps"])


# --------------------------------------------------------------------------------- config
@pytest.mark.parametrize("fields, message", [
    ({"n_cells": 0}, "NetworkConfig.n_cells = 0 is invalid; allowed: an integer >= 1"),
    ({"topology": "star"}, "NetworkConfig.topology = 'star' is invalid; allowed: one of "
                           "['ring', 'line']"),
    ({"partition": "greedy"}, "NetworkConfig.partition = 'greedy' is invalid; allowed: one of "
                              "['equal', 'proportional', 'random']"),
    ({"edge_ues": "yes"}, "NetworkConfig.edge_ues = 'yes' is invalid; allowed: true or false"),
    ({"local_ues": 2.5}, "NetworkConfig.local_ues = 2.5 is invalid; allowed: an integer >= 1"),
    ({"partition_period_ttis": 0}, "NetworkConfig.partition_period_ttis = 0 is invalid"),
    ({"n_cells": 4, "max_share_rbgs": 3},
     "NetworkConfig.max_share_rbgs = 3 is invalid; allowed: an integer >= 4"),
    ({"scenario": {"cell": {}}}, "NetworkConfig.scenario = {'cell': {}} is invalid; allowed: a "
                                 "textgame.config.ScenarioConfig"),
    ({"scenario": scenario({"leave_prob": 0.1})},
     "NetworkConfig.scenario.cell.leave_prob = 0.1 is invalid; allowed: 0 (the UEs of a "
     "network are fixed; no churn)"),
])
def test_invalid_network_configs_name_field_value_and_what_is_allowed(fields, message):
    with pytest.raises(ConfigError) as error:
        NetworkConfig(**fields)
    assert str(error.value).startswith(message)


def test_from_dict_builds_the_scenario_and_refuses_unknown_keys():
    config = NetworkConfig.from_dict({"n_cells": 2, "scenario": {"cell": {"n_rbgs": 6}}})
    assert config.pool_rbgs == 12
    with pytest.raises(ConfigError, match="NetworkConfig.cells = 3 is invalid; allowed: one of"):
        NetworkConfig.from_dict({"cells": 3})
