"""Heuristic policies: exact decisions on constructed observations, and their composition."""

import numpy as np
import pytest

from textgame.config import CellConfig, ConfigError, ScenarioConfig
from textgame.game import FollowerObs, LeaderObs
from textgame.metrics import summarize
from textgame.policies import (
    DictatorFollower,
    MaxWeightLeader,
    MixedFollower,
    RandomFollower,
    RandomLeader,
    RoundRobinLeader,
    SAlohaConfig,
    SAlohaFollower,
    legacy_mask,
    make_follower,
    make_leader,
)
from textgame.runner import run_episodes
from textgame.simulator import COLLISION, IDLE, SUCCESS

SE = np.array([0.2344, 0.3770, 0.6016])


def leader_obs(active, queue=None, csi=None, n_rbgs=4) -> LeaderObs:
    active = np.array(active, dtype=bool)
    zeros = np.zeros(active.shape, dtype=np.int64)
    return LeaderObs(t=0, active=active, n_active=active.sum(axis=1), ucm=zeros, csi=(
        zeros if csi is None else np.array(csi)), served_rbgs=zeros,
        queue_report=zeros if queue is None else np.array(queue),
        rbg_outcome=np.zeros((active.shape[0], n_rbgs), dtype=np.int8), spectral_efficiency=SE)


def follower_obs(buffer, feedback, dcm_bits=None) -> FollowerObs:
    buffer = np.array(buffer)
    feedback = np.array(feedback, dtype=np.int8)
    return FollowerObs(t=1, active=np.ones(buffer.shape, dtype=bool), buffer_dpdus=buffer,
                       buffer_bits=buffer * 256, channel=np.zeros_like(buffer),
                       dcm_bits=np.zeros(feedback.shape, dtype=bool) if dcm_bits is None
                       else np.array(dcm_bits, dtype=bool),
                       feedback=feedback, last_ucm=np.zeros_like(buffer))


def test_round_robin_continues_where_the_last_tti_stopped():
    leader = RoundRobinLeader()
    leader.reset(1, 4, 4, np.random.default_rng(0))
    obs = leader_obs([[True, True, True, False]])
    assert leader.act(obs).tolist() == [[1, 2, 3, 1]]
    assert leader.act(obs).tolist() == [[2, 3, 1, 2]]
    assert leader.act(obs).tolist() == [[3, 1, 2, 3]]


def test_max_weight_grants_by_queue_times_se_and_spends_the_reported_queue():
    leader = MaxWeightLeader(dpdu_bits=256, rbg_resource_elements=672)
    leader.reset(1, 3, 4, np.random.default_rng(0))
    # weights: UE1 2*256*0.2344 = 120.0, UE2 0, UE3 256*0.6016 = 154.0 -> RBG1 to UE3, whose
    # 256 reported bits fit one RBG (404 bits); UE1's 512 bits then take 157 bits per RBG:
    # 355, 198, 41 left, so RBGs 2-4 all go to UE1.
    obs = leader_obs([[True, True, True]], queue=[[2, 0, 1]], csi=[[0, 2, 2]])
    assert leader.act(obs).tolist() == [[3, 1, 1, 1]]


def test_max_weight_leaves_rbgs_idle_when_nobody_reported_data():
    leader = MaxWeightLeader()
    leader.reset(2, 3, 4, np.random.default_rng(0))
    # env 1: one reported dPDU (256 bits) at poor CSI needs two RBGs of 157 bits, then stops
    obs = leader_obs([[True, True, False], [True, False, False]], queue=[[0, 0, 0], [1, 0, 0]])
    assert leader.act(obs).tolist() == [[0, 0, 0, 0], [1, 1, 0, 0]]


def test_max_weight_names_active_ranks_not_slots():
    leader = MaxWeightLeader()
    leader.reset(1, 3, 1, np.random.default_rng(0))
    obs = leader_obs([[False, True, True]], queue=[[0, 0, 5]], n_rbgs=1)
    assert leader.act(obs).tolist() == [[2]]  # slot 2 is the second active UE


def test_random_leader_stays_within_active_ues():
    leader = RandomLeader()
    leader.reset(500, 5, 4, np.random.default_rng(1))
    n = np.array([1, 3, 5, 2, 4] * 100)
    obs = leader_obs(np.arange(5)[None, :] < n[:, None])
    dcm = leader.act(obs)
    assert (dcm >= 0).all() and (dcm <= n[:, None]).all()
    assert set(np.unique(dcm[n == 5])) == {0, 1, 2, 3, 4, 5}


def test_dictator_transmits_its_dcm_bits_and_reports_its_buffer():
    follower = DictatorFollower()
    follower.reset(1, 3, 2, 4, np.random.default_rng(0))
    bits = [[[1, 0], [0, 1], [0, 0]]]
    bitmap, ucm = follower.act(follower_obs([[0, 2, 9]], np.zeros((1, 3, 2)), bits))
    assert bitmap.astype(int).tolist() == bits
    assert ucm.tolist() == [[0, 2, 3]]  # min(buffer, K - 1)


def test_legacy_mask_takes_the_last_active_ues_by_rank():
    active = np.array([[1, 1, 1, 1, 1], [1, 0, 1, 0, 1], [0, 1, 0, 0, 0]], dtype=bool)
    assert legacy_mask(active, 2).astype(int).tolist() == [
        [0, 0, 0, 1, 1], [0, 0, 1, 0, 1], [0, 1, 0, 0, 0]]  # env 2: its only UE is legacy
    assert not legacy_mask(active, 0).any()
    assert (legacy_mask(active, 9) == active).all()


def test_mixed_follower_takes_each_ues_action_from_its_owner():
    mixed = MixedFollower(DictatorFollower(), SAlohaFollower(SAlohaConfig(p0=1.0, floor=1.0)), 1)
    mixed.reset(1, 3, 2, 4, np.random.default_rng(0))
    bits = [[[0, 0], [1, 0], [0, 1]]]
    bitmap, ucm = mixed.act(follower_obs([[5, 5, 5]], np.zeros((1, 3, 2)), bits))
    # UEs 1-2 obey their DCM bits; UE 3 is legacy S-ALOHA with p = 1: sends on every RBG, UCM 0
    assert bitmap.astype(int).tolist() == [[[0, 0], [1, 0], [1, 1]]]
    assert ucm.tolist() == [[3, 3, 0]]
    with pytest.raises(ConfigError, match="MixedFollower.n_legacy = -1"):
        MixedFollower(DictatorFollower(), SAlohaFollower(), -1)


def test_s_aloha_backs_off_on_collision_floors_and_resets_on_success():
    follower = SAlohaFollower(SAlohaConfig(p0=0.5, backoff=0.5, floor=0.1))
    follower.reset(1, 3, 2, 4, np.random.default_rng(0))
    collided = [[COLLISION, IDLE], [IDLE, IDLE], [SUCCESS, COLLISION]]
    follower.act(follower_obs([[1, 1, 1]], [collided]))
    assert follower.p.tolist() == [[0.25, 0.5, 0.5]]  # success wins over a collision
    follower.act(follower_obs([[1, 1, 1]], [collided]))
    follower.act(follower_obs([[1, 1, 1]], [collided]))
    assert follower.p.tolist() == [[0.1, 0.5, 0.5]]  # 0.0625 is below the floor
    follower.act(follower_obs([[1, 1, 1]], [[[SUCCESS, IDLE], [IDLE, IDLE], [IDLE, IDLE]]]))
    assert follower.p.tolist() == [[0.5, 0.5, 0.5]]


def test_s_aloha_sends_with_probability_p0_and_never_with_an_empty_buffer():
    follower = SAlohaFollower(SAlohaConfig(p0=0.3))
    follower.reset(2000, 2, 4, 4, np.random.default_rng(0))
    bitmap, ucm = follower.act(follower_obs(np.tile([[5, 0]], (2000, 1)), np.zeros((2000, 2, 4))))
    rate = bitmap[:, 0].mean()
    assert abs(rate - 0.3) < 4 * np.sqrt(0.3 * 0.7 / 8000)
    assert not bitmap[:, 1].any() and not ucm.any()


def test_s_aloha_config_is_validated():
    with pytest.raises(ConfigError, match="SAlohaConfig.floor"):
        SAlohaConfig(p0=0.1, floor=0.2)
    with pytest.raises(ConfigError, match="SAlohaConfig.backoff"):
        SAlohaConfig(backoff=1.5)


def test_random_follower_draws_valid_ucms():
    follower = RandomFollower()
    follower.reset(100, 4, 3, 4, np.random.default_rng(0))
    bitmap, ucm = follower.act(follower_obs(np.ones((100, 4), int), np.zeros((100, 4, 3))))
    assert bitmap.shape == (100, 4, 3) and set(np.unique(ucm)) == {0, 1, 2, 3}


def test_unknown_policy_names_are_rejected_with_the_choices():
    with pytest.raises(ValueError, match="max_weight"):
        make_leader("fifo")
    with pytest.raises(ValueError, match="s_aloha"):
        make_follower("greedy")


def test_scheduled_pairs_never_collide_and_beat_random_access():
    scenario = ScenarioConfig(cell=CellConfig(ue_counts=(5,)))
    kpi = {}
    for leader, follower in [("max_weight", "dictator"), ("round_robin", "dictator"),
                             ("random", "random"), ("idle", "s_aloha")]:
        result = run_episodes(scenario, make_leader(leader, scenario.cell),
                              make_follower(follower), episodes=64, n_envs=32, seed=0)
        kpi[leader] = summarize([result])
    for scheduled in ("max_weight", "round_robin"):
        assert kpi[scheduled]["collision_rate"].mean == 0.0
        for contention in ("random", "idle"):
            gap = kpi[scheduled]["throughput_mbps"].mean - kpi[contention]["throughput_mbps"].mean
            assert gap > kpi[scheduled]["throughput_mbps"].ci95 + kpi[contention][
                "throughput_mbps"].ci95
