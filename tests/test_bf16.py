"""bf16 on the CPU: bf16 weights, and bf16 autocast (``mixed_precision: bf16``), value heads fp32.

Tolerances. bf16 keeps 8 significant bits, unit roundoff u = 2^-8. Sampling (meta-prompt KV
cache, then one cached decode step per token) and the update (one forward over prompt +
action) add the same terms in different orders, so each logit may differ by about one rounding
of its magnitude; the action log-prob sums T of them, so the first ratio is 1 within T * u
(T = the longest action). Saving and loading changes no bit: the adapters and heads are stored
in fp32 and the same kernels run on the same weights, so reloaded outputs are compared exactly.
"""

import numpy as np
import pytest
import torch
from test_shared_prefix import make_policy
from transformers import AutoTokenizer
from trl import ModelConfig

from grammars import ROLES
from trainers.policy.base_model import load_base_model
from trainers.policy.encoding import PromptEncoder
from trainers.policy.models import StackelbergPolicy
from trainers.stackelberg.config import StackelbergPPOConfig
from trainers.stackelberg.rollout import RolloutWorker
from trainers.stackelberg.update import minibatch_losses

U_BF16 = 2.0**-8
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tokenizer(tiny_path):
    return AutoTokenizer.from_pretrained(tiny_path)


def first_ratios(policy, tokenizer, autocast: bool):
    """{(role, shared): (ratio_max, ratio_mean, longest action)} of one epoch's decisions,
    rollout and update both under bf16 autocast when ``autocast`` (as the trainer runs them)."""
    config = StackelbergPPOConfig(
        scenario={"cell": {"ue_counts": [3, 5, 11], "n_rbgs": 2, "episode_ttis": 2}},
        n_envs=3, episodes_per_epoch=3, minibatch_size=64, temperature_start=0.7)
    precision = torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast)
    with precision:
        decisions = RolloutWorker(policy, tokenizer, PromptEncoder(tokenizer), config).collect(0)
    out = {}
    for role, d in zip(ROLES, decisions[:2], strict=True):
        assert all(isinstance(v, float) for v in d.values)
        for shared in (False, True):
            config.shared_prefix_update = shared
            with torch.no_grad(), precision:
                losses = minibatch_losses(policy.ppo_mode(), role, d, np.arange(len(d)), config,
                                          tokenizer.eos_token_id, tokenizer.pad_token_id)
            out[role, shared] = (float(losses["ratio_max"]), float(losses["ratio_mean"]),
                                 max(len(t) for t in d.tokens))
    return out


@pytest.mark.parametrize("weights", ["bf16", "fp32 + bf16 autocast"])
def test_the_first_ppo_ratio_is_one_within_bf16_rounding(tiny_path, tokenizer, weights):
    bf16 = weights == "bf16"
    policy = make_policy(tiny_path, dtype=torch.bfloat16 if bf16 else None)
    base = policy.peft_model.get_base_model()
    assert base.lm_head.weight.dtype == (torch.bfloat16 if bf16 else torch.float32)
    assert all(p.dtype == torch.float32 for p in policy.value_heads.parameters())
    for (role, shared), (high, mean, steps) in first_ratios(policy, tokenizer, not bf16).items():
        tolerance = steps * U_BF16
        assert abs(high - 1.0) <= tolerance, (role, shared, high)
        assert abs(mean - 1.0) <= tolerance, (role, shared, mean)


def test_bf16_adapters_and_heads_reload_bit_identically(tiny_path, tokenizer, tmp_path):
    from test_models import batch

    policy = make_policy(tiny_path, dtype=torch.bfloat16).eval()
    policy.save_adapters(tmp_path)
    fresh = load_base_model(ModelConfig(model_name_or_path=tiny_path)).to(torch.bfloat16)
    loaded = StackelbergPolicy.from_pretrained(fresh, tmp_path).eval()
    for role in ROLES:
        ids, mask, grammars = batch(tokenizer, role, policy.vocab_size)
        action, values = policy.generate_actions(role, ids, mask, grammars, temperature=0.7,
                                                 generator=torch.Generator().manual_seed(0))
        again, loaded_values = loaded.generate_actions(role, ids, mask, grammars,
                                                       temperature=0.7,
                                                       generator=torch.Generator().manual_seed(0))
        assert torch.equal(again.tokens, action.tokens)
        assert torch.equal(again.logprobs, action.logprobs)
        assert torch.equal(loaded_values, values) and values.dtype == torch.float32
