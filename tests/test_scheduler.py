"""Saved adapters as textgame schedulers (trainers.policy.scheduler): run_episodes, simulate."""

from __future__ import annotations

import numpy as np
import pytest
from trl import ModelConfig

from textgame.config import CellConfig, ConfigError, ScenarioConfig
from textgame.runner import run_episodes
from trainers.cli.simulate import main as simulate
from trainers.policy.models import StackelbergPolicy
from trainers.policy.scheduler import LLMFollower, LLMLeader, load_llm_policies
from trainers.runs.hub import write_trainer_config
from trainers.stackelberg.config import StackelbergPPOConfig

CELL = CellConfig(n_rbgs=2, ue_counts=(3,), episode_ttis=3)


def save_policy(tiny_path, folder, **config) -> str:
    folder.mkdir()
    config = StackelbergPPOConfig(value_head_hidden=16, **config)
    policy = StackelbergPolicy.from_model_config(
        ModelConfig(model_name_or_path=tiny_path, lora_r=4, lora_alpha=8), config)
    policy.save_adapters(folder)
    write_trainer_config(folder, config)
    return str(folder)


@pytest.fixture(scope="module")
def llm_dir(tiny_path, tmp_path_factory) -> str:
    return save_policy(tiny_path, tmp_path_factory.mktemp("sched") / "policy")


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
    from textgame.policies import make_follower

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


def test_adapters_trained_with_history_are_refused(tiny_path, tmp_path):
    folder = save_policy(tiny_path, tmp_path / "history", history_ttis=2)
    with pytest.raises(ConfigError, match="history_ttis = 2 is not supported"):
        LLMLeader(folder)


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
