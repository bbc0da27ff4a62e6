"""Critic warm-up (trainers.stackelberg.critic): fitted value heads explain held-out returns."""

import math

import pytest
import torch
from trl import ModelConfig

from textgame.config import ConfigError
from trainers.policy.encoding import PromptEncoder, load_tokenizer
from trainers.policy.models import StackelbergPolicy
from trainers.stackelberg.config import StackelbergPPOConfig
from trainers.stackelberg.critic import fit_value_head, warm_up_critic
from trainers.stackelberg.rollout import RolloutWorker

pytestmark = pytest.mark.usefixtures("one_thread")


def test_fit_value_head_fits_a_learnable_target():
    torch.manual_seed(0)
    from trainers.policy.base_model import value_head

    head = value_head(8, 16)
    x = torch.randn(256, 8)
    y = x[:, 0] * 2.0 - x[:, 1]
    before = float(0.5 * (head(x).squeeze(-1) - y).square().mean())
    after = fit_value_head(head, x, y, steps=300, learning_rate=1e-2)
    assert after < before / 20


def test_the_warm_up_explains_held_out_returns_better_than_a_fresh_head(tiny_path):
    config = StackelbergPPOConfig(
        scenario={"cell": {"ue_counts": [2, 3], "n_rbgs": 2, "episode_ttis": 10}},
        n_envs=4, episodes_per_epoch=4, critic_warmup_episodes=16, value_head_hidden=32,
        temperature_start=0.7)
    tokenizer = load_tokenizer(tiny_path)
    policy = StackelbergPolicy.from_model_config(
        ModelConfig(model_name_or_path=tiny_path, lora_r=4, lora_alpha=8), config)
    adapters = {n: p.detach().clone() for n, p in policy.peft_model.named_parameters()
                if "lora_" in n}
    worker = RolloutWorker(policy, tokenizer, PromptEncoder(tokenizer), config)
    metrics = warm_up_critic(policy, worker, config)
    for role in ("leader", "follower"):
        fresh = metrics[f"{role}/explained_variance_fresh"]
        warm = metrics[f"{role}/explained_variance_warm"]
        assert math.isfinite(fresh) and math.isfinite(warm)
        assert warm > fresh + 0.1, (role, fresh, warm)
        assert metrics[f"{role}/decisions"] > 0
    assert metrics["leader/decisions"] == 12 * 10  # 3 batches x 4 envs x T
    assert all(torch.equal(p, adapters[n]) for n, p in policy.peft_model.named_parameters()
               if "lora_" in n)  # only the heads moved


def test_critic_warmup_episodes_must_hold_out_a_batch():
    with pytest.raises(ConfigError, match=r"critic_warmup_episodes = 4 is invalid; allowed: "
                                          r"0 or a multiple of n_envs \(4\) of at least 8"):
        StackelbergPPOConfig(n_envs=4, episodes_per_epoch=4, critic_warmup_episodes=4)
