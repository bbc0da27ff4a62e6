"""Expert agreement after seeding (paper §IV): the bookkeeping of leader agreement and follower
obedience, checked with stand-in policies whose answers are known, and one greedy LLM pass."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from transformers import AutoTokenizer
from trl import ModelConfig

from textgame.policies import make_leader
from textgame.text_env import TextStackelbergEnv
from trainers.policy.models import StackelbergPolicy
from trainers.stackelberg import agreement
from trainers.stackelberg.agreement import expert_agreement, format_agreement
from trainers.stackelberg.config import StackelbergPPOConfig

CONFIG = StackelbergPPOConfig(
    scenario={"cell": {"ue_counts": [2, 3], "n_rbgs": 3, "episode_ttis": 4}}, n_envs=2,
    value_head_hidden=16)

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def policy(tiny_path):
    return StackelbergPolicy.from_model_config(
        ModelConfig(model_name_or_path=tiny_path, lora_r=2, lora_alpha=4,
                    lora_target_modules=["q_proj", "v_proj"]), CONFIG)


@pytest.fixture(scope="module")
def tokenizer(tiny_path):
    return AutoTokenizer.from_pretrained(tiny_path)


def stand_in(leader_dcm, follower_bits):
    """A ``_greedy_texts`` whose leader answers ``leader_dcm(env)`` (B, N) and whose followers
    answer ``follower_bits(env)`` (B, I_max, N) with UCM 0."""
    def texts(decider, env: TextStackelbergEnv, role, prompts, n_ues):
        assert len(n_ues) == len(prompts)
        if role == "leader":
            return env.leader_texts(leader_dcm(env))
        bits = follower_bits(env)
        return env.follower_texts(bits, np.zeros(bits.shape[:2], dtype=np.int64))
    return texts


def experts_dcm(env):
    expert = make_leader("max_weight", env.scenario.cell)  # stateless: a fresh one per TTI
    expert.reset(env.n_envs, env.max_ues, env.n_rbgs, np.random.default_rng(0))
    return expert.act(env.game.leader_obs())


def obedient_bits(env):
    return env.follower_obs.dcm_bits


def test_a_perfect_imitator_agrees_everywhere(policy, tokenizer, monkeypatch):
    monkeypatch.setattr(agreement, "_greedy_texts", stand_in(experts_dcm, obedient_bits))
    out = expert_agreement(policy, tokenizer, CONFIG, episodes=3)
    assert out["leader_agreement"] == out["follower_obedience"] == 1.0
    assert out["leader_agreement/I=2"] == out["leader_agreement/I=3"] == 1.0
    assert out["collision_rate/I=3"] == 0.0  # obedient UEs on a DCM never collide


def test_an_idle_leader_agrees_where_the_expert_leaves_rbgs_idle(policy, tokenizer,
                                                                  monkeypatch):
    seen = []

    def idle(env):
        seen.append(experts_dcm(env))
        return np.zeros_like(seen[-1])

    monkeypatch.setattr(agreement, "_greedy_texts", stand_in(idle, obedient_bits))
    out = expert_agreement(policy, tokenizer, CONFIG, episodes=3, ue_counts=(3,))
    expected = np.concatenate(seen)  # (rows, N) the expert's DCMs on the played states
    assert expected.shape == (3 * 4, 3)  # 3 episodes (2 + 1 envs) x 4 TTIs, N = 3
    assert out["leader_agreement"] == pytest.approx((expected == 0).mean(), abs=0)
    assert 0 < out["leader_agreement"] < 1


def test_silent_followers_obey_only_empty_dcms(policy, tokenizer, monkeypatch):
    seen = []

    def silent(env):
        bits = env.follower_obs.dcm_bits
        seen.extend(~bits[e, i].any() for e, i in env.follower_slots)
        return np.zeros_like(bits)

    monkeypatch.setattr(agreement, "_greedy_texts", stand_in(experts_dcm, silent))
    out = expert_agreement(policy, tokenizer, CONFIG, episodes=2, ue_counts=(2,))
    assert len(seen) == 2 * 4 * 2  # 2 episodes x 4 TTIs x 2 UEs
    assert out["follower_obedience"] == pytest.approx(np.mean(seen), abs=0)


def test_the_llm_plays_greedily_and_the_table_lists_every_i(policy, tokenizer):
    first = expert_agreement(policy, tokenizer, CONFIG, episodes=1, episode_ttis=2)
    again = expert_agreement(policy, tokenizer, CONFIG, episodes=1, episode_ttis=2)
    assert first == again  # greedy decoding: no sampling noise
    assert 0 <= first["leader_agreement"] <= 1 and 0 <= first["follower_obedience"] <= 1
    table = format_agreement(first)
    assert [line.split("|")[1].strip() for line in table.splitlines()[3:]] == ["2", "3", "all"]


def test_round_robin_follows_its_own_pointer(policy, tokenizer, monkeypatch):
    config = dataclasses.replace(CONFIG, expert_leader="round_robin")
    robin = make_leader("round_robin")

    def cyclic(env):  # the expert's pointer starts afresh with every batch of episodes
        if env.game.leader_obs().t == 0:
            robin.reset(env.n_envs, env.max_ues, env.n_rbgs, np.random.default_rng(0))
        return robin.act(env.game.leader_obs())

    monkeypatch.setattr(agreement, "_greedy_texts", stand_in(cyclic, obedient_bits))
    assert expert_agreement(policy, tokenizer, config, episodes=2)["leader_agreement"] == 1.0


def test_seeding_prints_and_returns_the_agreement(tiny_path, tmp_path, capsys):
    import test_trainer  # tests/ is on sys.path under pytest

    trainer = test_trainer.make_trainer(test_trainer.run_config(
        tiny_path, tmp_path, expert_seeding=True, expert_episodes=2,
        expert_agreement_episodes=1, expert_agreement_ttis=2))
    metrics = trainer.seed_with_experts()
    assert set(metrics) == {"leader", "follower", "agreement"}
    printed = capsys.readouterr().out
    assert format_agreement(metrics["agreement"]) in printed
    assert trainer.policy.role == "leader"
