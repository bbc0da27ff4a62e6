"""The PettingZoo AEC environment (design §4): API conformance, turn order, seeding, rewards."""

from __future__ import annotations

import numpy as np
import pytest
from gymnasium.utils.env_checker import data_equivalence
from pettingzoo.test import api_test, seed_test

from textgame.config import CellConfig, ChannelConfig, ScenarioConfig, TrafficConfig
from textgame.game import StackelbergGame
from textgame.pettingzoo_env import UplinkAECEnv, env, follower_dict, leader_dict, raw_env

# api_test warns about Dict spaces and the agent name "bs"; both are by design
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def scenario(**cell) -> ScenarioConfig:
    return ScenarioConfig(cell=CellConfig(**cell))


def dictator_scenario() -> ScenarioConfig:
    """3 UEs, one dPDU per UE per TTI, no erasures, a channel that never changes state."""
    return ScenarioConfig(
        cell=CellConfig(ue_counts=(3,), episode_ttis=8, tbler=0.0),
        traffic=TrafficConfig(models=("periodic",), period_ttis=1),
        channel=ChannelConfig(stay_prob=1.0))


def random_episode(environment, seed: int) -> list:
    """(agent, obs, reward, terminated, truncated) at every turn under seeded random actions."""
    environment.reset(seed=seed)
    for i, agent in enumerate(environment.possible_agents):
        environment.action_space(agent).seed(seed + i)
    trace = []
    for agent in environment.agent_iter():
        obs, reward, terminated, truncated, _ = environment.last()
        trace.append((agent, obs, reward, terminated, truncated))
        dead = terminated or truncated
        environment.step(None if dead else environment.action_space(agent).sample())
    return trace


@pytest.mark.parametrize("make", [raw_env, env], ids=["raw", "wrapped"])
def test_api_test_passes(make):
    api_test(make(), num_cycles=300, verbose_progress=False)


@pytest.mark.parametrize("cell", [
    dict(leave_prob=0.1),
    dict(join_prob=0.1, ue_counts=(1,), max_ues=5),
], ids=["leave-only", "join-only"])
def test_api_test_passes_with_one_sided_churn(cell):
    api_test(env(scenario=scenario(**cell)), num_cycles=300, verbose_progress=False)


def test_seed_test_passes():
    seed_test(env, num_cycles=60)


def test_same_seed_same_episode_and_different_seeds_differ():
    first = random_episode(raw_env(), seed=7)
    assert data_equivalence(first, random_episode(raw_env(), seed=7))
    assert not data_equivalence(first, random_episode(raw_env(), seed=8))


def test_unseeded_reset_continues_a_seeded_env_reproducibly():
    a, b = raw_env(), raw_env()
    a.reset(seed=3)
    b.reset(seed=3)
    a.reset()
    b.reset()
    assert data_equivalence(a.observe("bs"), b.observe("bs"))


def test_reset_seed_draws_the_same_episode_as_the_game():
    environment = raw_env()
    environment.reset(seed=11)
    game = StackelbergGame(environment.scenario)
    assert data_equivalence(environment.observe("bs"), leader_dict(game.reset(seed=11)))


def test_turn_order_is_bs_then_active_ues_in_slot_order():
    environment = raw_env()
    environment.reset(seed=5)
    ues = environment.agents[1:]
    assert ues == [f"ue_{i}" for i in range(len(ues))]
    order = []
    for agent in environment.agent_iter(3 * (1 + len(ues))):
        order.append(agent)
        environment.step(environment.action_space(agent).sample())
    assert order == (["bs"] + ues) * 3


def test_turn_order_follows_the_active_slots_under_churn():
    environment = raw_env(scenario=scenario(join_prob=0.3, leave_prob=0.3, episode_ttis=30))
    environment.reset(seed=2)
    expected, played = [], []  # per TTI: the active UEs at the bs's turn, the UEs that acted
    for agent in environment.agent_iter():
        _, _, terminated, truncated, _ = environment.last()
        if terminated or truncated:
            environment.step(None)
            continue
        if agent == "bs":
            active = np.flatnonzero(environment.observe("bs")["active"])
            expected.append([f"ue_{i}" for i in active])
            played.append([])
        else:
            played[-1].append(agent)
        environment.step(environment.action_space(agent).sample())
    assert len(played) == 30 and played == expected
    assert len({tuple(p) for p in played}) > 1  # the population did change


def test_churn_terminates_leavers_and_adds_joiners_at_the_next_tti():
    environment = raw_env(scenario=scenario(join_prob=0.3, leave_prob=0.3, episode_ttis=30))
    environment.reset(seed=4)
    left = joined = 0
    before = set(environment.agents)
    for agent in environment.agent_iter():
        _, reward, terminated, truncated, _ = environment.last()
        if terminated:  # left after the last TTI: inactive now, rewarded for that TTI
            slot = int(agent.split("_")[1])
            assert environment.observe("bs")["active"][slot] == 0
            assert reward == environment.last_step.follower_reward[0, slot]
            left += 1
        if agent == "bs" and not truncated:  # every dead step is done before the bs acts
            active = np.flatnonzero(environment.observe("bs")["active"])
            assert environment.agents == ["bs"] + [f"ue_{i}" for i in active]
            joined += len(set(environment.agents) - before)
            before = set(environment.agents)
        dead = terminated or truncated
        environment.step(None if dead else environment.action_space(agent).sample())
    assert left > 0 and joined > 0


def test_dictator_rewards_equal_the_game_run_side_by_side():
    sc, seed = dictator_scenario(), 13
    environment, game = raw_env(scenario=sc), StackelbergGame(sc)
    environment.reset(seed=seed)
    leader_obs = game.reset(seed=seed)
    dcm = np.ones((1, sc.cell.n_rbgs), dtype=np.int64)  # every RBG to rank 1 = ue_0
    for _ in range(sc.cell.episode_ttis):
        assert data_equivalence(environment.observe("bs"), leader_dict(leader_obs))
        environment.step(dcm[0])
        follower_obs = game.step_leader(dcm)
        for slot, agent in enumerate(environment.agents[1:]):
            assert environment.agent_selection == agent
            obs = environment.observe(agent)
            assert data_equivalence(obs, follower_dict(follower_obs, slot))
            environment.step({"bitmap": obs["dcm_bits"], "ucm": 0})  # obey the DCM
        step = game.step_followers(follower_obs.dcm_bits.astype(np.int8), np.zeros((1, 3), int))
        assert environment.rewards["bs"] == step.leader_reward[0]
        for slot in range(3):
            assert environment.rewards[f"ue_{slot}"] == step.follower_reward[0, slot]
        leader_obs = step.leader_obs
    assert all(environment.truncations.values()) and not any(environment.terminations.values())


def test_dictator_rewards_by_hand():
    """ue_0 sends its one dPDU (256 bits) on 4 error-free RBGs each TTI; nobody else transmits."""
    environment = raw_env(scenario=dictator_scenario())
    environment.reset(seed=0)
    for _ in range(environment.scenario.cell.episode_ttis):
        environment.step(np.array([1, 1, 1, 1]))
        for agent in environment.agents[1:]:
            environment.step({"bitmap": environment.observe(agent)["dcm_bits"], "ucm": 0})
        assert environment.rewards["ue_0"] == 0.5 * min(1, 1 / 4) + 0.5  # eq. 2: rx = 1, tx = 4
        assert environment.rewards["ue_1"] == environment.rewards["ue_2"] == 0.5  # S = 1 only
        c_max = int(4 * 12 * 14 * 0.6016)  # 404 bits: one RBG at the best SE (eq. 1)
        assert environment.rewards["bs"] == 0.5 * 256 / (4 * c_max) + 0.5 / 3  # eq. 5, JFI = 1/3


def test_ue_observation_before_the_dcm_is_the_game_view_without_dcm_bits():
    sc, seed = dictator_scenario(), 21
    environment, game = raw_env(scenario=sc), StackelbergGame(sc)
    environment.reset(seed=seed)
    game.reset(seed=seed)
    dcm = np.array([[1, 2, 3, 0]])
    for _ in range(3):
        before = {a: environment.observe(a) for a in environment.agents[1:]}
        follower_obs = game.step_leader(dcm)
        follower_obs.dcm_bits[:] = False
        for slot, agent in enumerate(environment.agents[1:]):
            assert data_equivalence(before[agent], follower_dict(follower_obs, slot))
        environment.step(dcm[0])
        for _ in environment.agents[1:]:
            environment.step({"bitmap": [1, 1, 0, 0], "ucm": 1})
        game.step_followers(np.tile([1, 1, 0, 0], (1, 3, 1)), np.ones((1, 3), int))


@pytest.mark.parametrize("cell", [dict(), dict(join_prob=0.3, leave_prob=0.3)],
                         ids=["static", "churn"])
def test_spaces_contain_every_observation(cell):
    environment = raw_env(scenario=scenario(**cell))
    environment.reset(seed=1)
    for agent in environment.agent_iter():
        for other in environment.agents:
            space, obs = environment.observation_space(other), environment.observe(other)
            assert space.contains(obs), (other, obs)
            assert all(obs[k].dtype == space[k].dtype for k in space)
        _, _, terminated, truncated, _ = environment.last()
        dead = terminated or truncated
        environment.step(None if dead else environment.action_space(agent).sample())


def test_out_of_range_dcm_entries_mean_nobody():
    environment = raw_env(scenario=scenario(ue_counts=(2,), max_ues=4))
    environment.reset(seed=0)
    assert environment.action_space("bs").contains(np.array([4, 3, 2, 1]))
    environment.step(np.array([4, 3, 2, 1]))  # ranks 3 and 4 do not exist with 2 UEs
    assert environment.observe("ue_0")["dcm_bits"].tolist() == [0, 0, 0, 1]
    assert environment.observe("ue_1")["dcm_bits"].tolist() == [0, 0, 1, 0]
    for agent in ("ue_0", "ue_1"):
        assert environment.agent_selection == agent
        environment.step({"bitmap": [0, 0, 0, 0], "ucm": 0})
    assert environment.last_step.dcm.tolist() == [[0, 0, 2, 1]]


def test_render_ansi_shows_t_dcm_and_bitmaps():
    environment = UplinkAECEnv(scenario=scenario(ue_counts=(2,)), render_mode="ansi")
    environment.reset(seed=0)
    assert environment.render() == "t=0 (no TTI executed yet)"
    environment.step(np.array([1, 0, 2, 2]))
    environment.step({"bitmap": [1, 0, 0, 0], "ucm": 1})
    environment.step({"bitmap": [0, 0, 1, 1], "ucm": 0})
    assert environment.render() == "t=0 dcm=1 0 2 2 ue_0=1000 ue_1=0011"
    environment.close()


def test_unknown_render_mode_is_rejected():
    with pytest.raises(ValueError, match="render_mode"):
        UplinkAECEnv(render_mode="human")


def test_policy_agents_play_the_env_as_the_game_does():
    """Max-Weight + Dictator through PolicyAgents earn, TTI by TTI, the rewards they earn in
    the game directly (same seed: same episode)."""
    from textgame.pettingzoo_env import PolicyAgents
    from textgame.policies import make_follower, make_leader

    sc = scenario(ue_counts=(4,), n_rbgs=3, episode_ttis=6)
    environment = env(scenario=sc)
    environment.reset(seed=11)
    agents = PolicyAgents(make_leader("max_weight", sc.cell), make_follower("dictator"))
    bs_rewards = []
    for agent in environment.agent_iter():
        _, reward, terminated, truncated, _ = environment.last()
        if agent == "bs" and environment.unwrapped.last_step is not None:
            bs_rewards.append(reward)  # the TTI before this turn (the last: the dead step)
        environment.step(None if terminated or truncated else agents(environment, agent))
    game = StackelbergGame(sc, n_envs=1)
    leader, follower = make_leader("max_weight", sc.cell), make_follower("dictator")
    rng = np.random.default_rng(0)
    leader.reset(1, 4, 3, rng)
    follower.reset(1, 4, 3, sc.cell.ucm_levels, rng)
    obs, expected = game.reset(seed=11), []
    while True:
        step = game.step_followers(*follower.act(game.step_leader(leader.act(obs))))
        expected.append(float(step.leader_reward[0]))
        if step.done:
            break
        obs = step.leader_obs
    assert bs_rewards == pytest.approx(expected, abs=0.0) and len(expected) == 6
