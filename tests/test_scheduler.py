"""Saved adapters as textgame schedulers (trainers.policy.scheduler): run_episodes, simulate,
PettingZoo, and k-TTI history prompts equal to the training rollout's."""

from __future__ import annotations

import numpy as np
import pytest

from textgame.config import CellConfig, ScenarioConfig
from textgame.policies import make_follower, make_leader
from textgame.runner import run_episodes
from trainers.cli.simulate import main as simulate
from trainers.policy.chat import chat_render
from trainers.policy.scheduler import LLMFollower, LLMLeader, load_llm_policies
from trainers.stackelberg.config import StackelbergPPOConfig
from trainers.stackelberg.rollout import RolloutWorker

CELL = CellConfig(n_rbgs=2, ue_counts=(3,), episode_ttis=3)


@pytest.fixture(scope="module")
def llm_dir(save_llm, tmp_path_factory) -> str:
    return save_llm(tmp_path_factory.mktemp("sched") / "policy")


def test_adapters_play_run_episodes_with_valid_actions(llm_dir, one_thread):
    leader, follower = load_llm_policies(llm_dir)
    assert isinstance(leader, LLMLeader) and isinstance(follower, LLMFollower)
    scenario = ScenarioConfig(cell=CELL)
    result = run_episodes(scenario, leader, follower, episodes=3, n_envs=2, seed=5)
    assert {len(v) for v in result.values()} == {3}
    assert (result["invalid_action_rate"] == 0).all()  # PAG: every action parses
    assert leader.invalid == 0 and follower.invalid == 0
    again = run_episodes(scenario, *load_llm_policies(llm_dir), episodes=3, n_envs=2, seed=5)
    for kpi in result:
        np.testing.assert_array_equal(result[kpi], again[kpi])  # seeded by the runner


def test_the_llm_leader_pairs_with_a_heuristic_follower(llm_dir, one_thread):
    leader, _ = load_llm_policies(llm_dir)
    result = run_episodes(ScenarioConfig(cell=CELL), leader, make_follower("dictator"),
                          episodes=2, n_envs=2)
    assert (result["collision_rate"] == 0).all()  # obedient UEs never collide


def test_simulate_plays_llm_specs(llm_dir, capsys, one_thread):
    code = simulate(["--leader", f"llm:{llm_dir}", "max_weight", "--followers",
                     f"llm:{llm_dir}", "dictator", "--ues", "3", "--rbgs", "2", "--episodes",
                     "2", "--n_envs", "2", "--scenario", '{"cell": {"episode_ttis": 3}}',
                     "--disable_tqdm"])
    assert code == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[2].startswith(f"| llm:{llm_dir} | llm:{llm_dir} | 3 | 2 |")
    assert lines[3].startswith("| max_weight | dictator | 3 | 2 |")


def test_adapters_play_the_pettingzoo_env(llm_dir, one_thread):
    from textgame.pettingzoo_env import PolicyAgents, env

    environment = env(scenario=ScenarioConfig(cell=CELL))  # bounds-checked actions
    environment.reset(seed=3)
    leader, follower = load_llm_policies(llm_dir)
    agents = PolicyAgents(leader, follower, seed=0)
    turns = 0
    for agent in environment.agent_iter():
        _, _, terminated, truncated, _ = environment.last()
        environment.step(None if terminated or truncated else agents(environment, agent))
        turns += not (terminated or truncated)
    assert turns == CELL.episode_ttis * (1 + 3)  # the bs and three UEs per TTI
    assert leader.invalid == 0 and follower.invalid == 0


# ------------------------------------------------------------------------------- history
CHURN = CellConfig(n_rbgs=2, ue_counts=(2, 3), max_ues=4, episode_ttis=6, join_prob=0.4,
                   leave_prob=0.3)


def recorded(policy, monkeypatch) -> list[list[str]]:
    """The prompts of each of ``policy``'s decisions, in order."""
    calls: list[list[str]] = []
    decide = policy._decide

    def spy(prompts, n_ues):
        calls.append(list(prompts))
        return decide(prompts, n_ues)

    monkeypatch.setattr(policy, "_decide", spy)
    return calls


def training_env(leader: LLMLeader, scenario: ScenarioConfig, history_ttis: int):
    """The text env of the training rollout, built as StackelbergPPOTrainer builds it."""
    config = StackelbergPPOConfig(history_ttis=history_ttis, scenario=scenario.to_dict(),
                                  n_envs=2, episodes_per_epoch=2, value_head_hidden=16)
    render = chat_render(leader.tokenizer) if config.use_chat_template else None
    return RolloutWorker(leader.policy, leader.tokenizer, leader.encoder, config, render).env


def test_history_prompts_are_the_training_rollouts_for_executed_actions(
        save_llm, tmp_path, monkeypatch, one_thread):
    """k = 2 under churn, in a DAgger-like mixture: env 0 executes the LLM's actions, env 1
    Max-Weight's DCM and obedient UEs, so the history must hold executed actions."""
    scenario = ScenarioConfig(cell=CHURN)
    leader, follower = load_llm_policies(save_llm(tmp_path / "k2", history_ttis=2,
                                                  scenario=scenario.to_dict()))
    env = training_env(leader, scenario, history_ttis=2)
    asked = {"leader": recorded(leader, monkeypatch), "follower": recorded(follower, monkeypatch)}
    other = make_leader("max_weight", CHURN), make_follower("dictator")
    for policy in (leader, other[0]):
        policy.reset(2, CHURN.max_ues, CHURN.n_rbgs, np.random.default_rng(0))
    for policy in (follower, other[1]):
        policy.reset(2, CHURN.max_ues, CHURN.n_rbgs, CHURN.ucm_levels, np.random.default_rng(0))
    prompts, actives, overridden = env.reset(seed=4), set(), [False, False]
    while prompts is not None:
        obs = env.game.leader_obs()
        actives.add(obs.active.tobytes())
        dcm = leader.act(obs)
        assert asked["leader"][-1] == prompts
        overridden[0] |= bool((dcm[1] != other[0].act(obs)[1]).any())
        dcm[1] = other[0].act(obs)[1]
        leader.executed(dcm, obs.active)
        prompts = env.step_leader(env.leader_texts(dcm))
        bitmap, ucm = follower.act(env.follower_obs)
        assert asked["follower"][-1] == prompts
        obedient = other[1].act(env.follower_obs)
        overridden[1] |= bool((bitmap[1] != obedient[0][1]).any())
        bitmap[1], ucm[1] = obedient[0][1], obedient[1][1]
        step = env.step_followers(env.follower_texts(bitmap, ucm))
        last, prompts = asked["leader"][-1], step.leader_prompts
    assert len(asked["leader"]) == CHURN.episode_ttis and len(actives) > 1  # UEs churned
    assert overridden == [True, True]  # own and executed actions differed
    assert all(p.count(": DCM ") == 2 for p in last)  # k = 2 history lines
    assert leader.invalid == 0 and follower.invalid == 0
