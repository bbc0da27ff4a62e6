"""The policy model (design §6): two LoRA adapters on one base, fp32 value heads, role isolation."""

import functools
import json

import pytest
import torch
from bitsandbytes.nn import Linear4bit
from trl import ModelConfig

from grammars import ROLES
from textgame.config import CellConfig, ScenarioConfig, replace_checked
from textgame.text_env import TextStackelbergEnv
from trainers.pag.sampler import compile_action_grammar, replay_masks
from trainers.policy.base_model import load_base_model, lora_config
from trainers.policy.encoding import encode_prompts
from trainers.policy.models import StackelbergPolicy
from trainers.ppo import token_logprobs

K = 4
SIZES = [(3, 4), (5, 2), (4, 8), (1, 1)]  # (I, N) per row
TEMPERATURE = 0.7


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="session")
def tokenizer(tiny_path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_path)


def model_config(path, **kwargs):
    return ModelConfig(model_name_or_path=path, lora_r=4, lora_alpha=8,
                       lora_target_modules="all-linear", **kwargs)


def make_policy(path, seed=0, dtype=None, **kwargs):
    config = model_config(path, **kwargs)
    base = load_base_model(config)
    if dtype is not None:
        base = base.to(dtype)
    return StackelbergPolicy(base, lora_config(config), value_head_hidden=32, seed=seed)


@functools.cache
def game_prompts(role):
    env = TextStackelbergEnv(ScenarioConfig(cell=replace_checked(CellConfig(), ue_counts=(5,))), 2)
    leader = env.reset(0)
    return leader if role == "leader" else env.step_leader(["1 2 0 3", "5 4 0 0"])


def batch(tokenizer, role, vocab_size):
    """Left-padded prompts of different lengths and one grammar per row."""
    prompts = game_prompts(role)
    texts = [prompts[b % 2][:len(prompts[b % 2]) - 30 * b] for b in range(len(SIZES))]
    ids, mask = encode_prompts(tokenizer, texts)
    grammars = [compile_action_grammar(tokenizer, role, i, n, K, vocab_size=vocab_size)
                for i, n in SIZES]
    return ids, mask, grammars


def sample(policy, tokenizer, role, seed=0):
    ids, mask, grammars = batch(tokenizer, role, policy.vocab_size)
    generator = torch.Generator().manual_seed(seed)
    action, values = policy.generate_actions(role, ids, mask, grammars, generator=generator,
                                             temperature=TEMPERATURE)
    return ids, mask, grammars, action, values


def perturb(policy, role, seed):
    """Random LoRA B (and head) weights so that the adapter changes the policy."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in policy.peft_model.named_parameters():
            if f"lora_B.{role}." in name:
                parameter.copy_(0.2 * torch.randn(parameter.shape, generator=generator))


def lora_b(policy, role):
    return [p for n, p in policy.peft_model.named_parameters() if f"lora_B.{role}." in n]


def snapshot(policy):
    return {name: p.detach().clone() for name, p in policy.named_parameters()}


def ppo_like_loss(policy, role, tokenizer):
    ids, mask, grammars, action, _ = sample(policy, tokenizer, role)
    logits, values = policy.forward_actions(role, ids, mask, action.tokens, action.lengths)
    masks = replay_masks(grammars, action.tokens, action.lengths)
    logp = token_logprobs(logits, masks, action.tokens, TEMPERATURE)
    reference = policy.reference_logits(role, ids, mask, action.tokens, action.lengths)
    kl = logp - token_logprobs(reference, masks, action.tokens, TEMPERATURE)  # between fwd, bwd
    return -logp.sum(1).mean() + (values - 1.0).square().mean() + 0.1 * kl.sum(1).mean()


# ------------------------------------------------------------------------------ adapters
def test_both_adapters_exist_and_are_different_modules(tiny_path):
    policy = make_policy(tiny_path)
    assert set(policy.peft_model.peft_config) == set(ROLES)
    layer = policy.peft_model.get_base_model().model.layers[0].self_attn.q_proj
    assert layer.lora_A["leader"] is not layer.lora_A["follower"]
    assert not torch.equal(layer.lora_A["leader"].weight, layer.lora_A["follower"].weight)
    assert all(torch.count_nonzero(p) == 0 for role in ROLES for p in lora_b(policy, role))


def test_role_parameters_partition_the_trainable_parameters(tiny_path, tokenizer):
    policy = make_policy(tiny_path)
    leader = {id(p) for p in policy.role_parameters("leader")}
    follower = {id(p) for p in policy.role_parameters("follower")}
    trainable = {id(p) for p in policy.parameters() if p.requires_grad}
    assert leader and follower and not leader & follower
    assert leader | follower == trainable
    # PEFT freezes inactive adapters on every switch; the policy keeps both sets trainable
    ids, mask, _, action, _ = sample(policy, tokenizer, "follower")
    policy.set_role("follower")
    policy.reference_logits("follower", ids, mask, action.tokens, action.lengths)
    assert trainable == {id(p) for p in policy.parameters() if p.requires_grad}


@pytest.mark.parametrize("role", ROLES)
def test_at_init_each_role_is_the_base_model(tiny_path, tokenizer, role):
    policy = make_policy(tiny_path).eval()
    ids, mask, _, action, _ = sample(policy, tokenizer, role)
    logits, _ = policy.forward_actions(role, ids, mask, action.tokens, action.lengths)
    reference = policy.reference_logits(role, ids, mask, action.tokens, action.lengths)
    assert logits.dtype == torch.float32
    assert torch.equal(logits, reference)


def test_same_seed_same_adapters_and_heads(tiny_path):
    first, second = make_policy(tiny_path, seed=3), make_policy(tiny_path, seed=3)
    other = make_policy(tiny_path, seed=4)
    a, b, c = (dict(p.named_parameters()) for p in (first, second, other))
    assert all(torch.equal(a[name], b[name]) for name in a)
    assert not all(torch.equal(a[name], c[name]) for name in a)


def test_use_restores_the_previous_role_and_rejects_unknown_roles(tiny_path):
    policy = make_policy(tiny_path)
    with policy.use("follower"):
        assert policy.peft_model.active_adapter == "follower"
    assert policy.role == policy.peft_model.active_adapter == "leader"
    with pytest.raises(ValueError, match="role = 'ue' is invalid"):
        policy.set_role("ue")


# ------------------------------------------------------------------------- role isolation
@pytest.mark.parametrize("role", ROLES)
def test_an_optimizer_step_changes_only_its_roles_adapter_and_head(tiny_path, tokenizer, role):
    policy = make_policy(tiny_path).train()
    other = ROLES[1 - ROLES.index(role)]
    perturb(policy, other, seed=1)  # the other adapter is non-trivial and must stay as it is
    optimizer = torch.optim.AdamW(policy.role_parameters(role), lr=1e-2)
    before = snapshot(policy)
    ppo_like_loss(policy, role, tokenizer).backward()
    mine = {id(p) for p in policy.role_parameters(role)}
    assert all(p.grad is None for p in policy.parameters() if id(p) not in mine)
    optimizer.step()
    after = dict(policy.named_parameters())
    for name, parameter in after.items():
        if id(parameter) not in mine:  # the other role and the frozen base
            assert torch.equal(parameter, before[name]), name
    changed = [name for name, p in after.items() if not torch.equal(p, before[name])]
    assert any(f"lora_B.{role}." in name for name in changed)
    assert any(name.startswith(f"value_heads.{role}.") for name in changed)


# ----------------------------------------------------------------- sampling == replaying
@pytest.mark.parametrize("role", ROLES)
def test_forward_actions_replays_the_sampled_logprobs_and_values(tiny_path, tokenizer, role):
    policy = make_policy(tiny_path).train()
    perturb(policy, role, seed=2)
    ids, mask, grammars, action, values = sample(policy, tokenizer, role)
    assert policy.training  # generate_actions restores the mode
    policy.eval()
    logits, replayed_values = policy.forward_actions(role, ids, mask, action.tokens,
                                                     action.lengths)
    reference = policy.reference_logits(role, ids, mask, action.tokens, action.lengths)
    assert (logits - reference).abs().max() > 1e-2  # the adapter matters
    masks = replay_masks(grammars, action.tokens, action.lengths)
    logp = token_logprobs(logits, masks, action.tokens, TEMPERATURE)  # (B, T)
    assert (logp.sum(1) - action.action_logprob).abs().max() < 1e-5
    assert (logp - action.logprobs).abs().max() < 1e-5
    assert (replayed_values - values).abs().max() < 1e-5
    assert (policy.values(role, ids, mask) - values).abs().max() < 1e-5


def test_each_role_samples_with_its_own_adapter(tiny_path, tokenizer):
    policy = make_policy(tiny_path).eval()
    perturb(policy, "leader", seed=2)
    ids, mask, _, action, _ = sample(policy, tokenizer, "follower")
    follower, _ = policy.forward_actions("follower", ids, mask, action.tokens, action.lengths)
    leader, _ = policy.forward_actions("leader", ids, mask, action.tokens, action.lengths)
    reference = policy.reference_logits("follower", ids, mask, action.tokens, action.lengths)
    assert torch.equal(follower, reference)
    assert not torch.equal(leader, reference)


# --------------------------------------------------------------------------- precision
def test_value_heads_stay_fp32_on_a_bf16_base(tiny_path, tokenizer):
    policy = make_policy(tiny_path, dtype=torch.bfloat16).eval()
    assert policy.peft_model.get_base_model().model.embed_tokens.weight.dtype == torch.bfloat16
    assert all(p.dtype == torch.float32 for p in policy.value_heads.parameters())
    ids, mask, _, action, values = sample(policy, tokenizer, "leader")
    logits, replayed = policy.forward_actions("leader", ids, mask, action.tokens, action.lengths)
    assert values.dtype == replayed.dtype == logits.dtype == torch.float32
    assert torch.isfinite(logits).all() and torch.isfinite(values).all()


# --------------------------------------------------------------------------- save, load
def test_saved_adapters_and_heads_load_into_a_fresh_base(tiny_path, tokenizer, tmp_path):
    policy = make_policy(tiny_path).eval()
    perturb(policy, "leader", seed=5)
    perturb(policy, "follower", seed=6)
    policy.save_adapters(tmp_path)
    for name in ("leader/adapter_model.safetensors", "leader/adapter_config.json",
                 "follower/adapter_model.safetensors", "follower/adapter_config.json",
                 "value_heads.safetensors"):
        assert (tmp_path / name).is_file(), name
    spec = json.loads((tmp_path / "value_heads.json").read_text())
    assert (spec["hidden_size"], spec["width"], spec["roles"]) == (64, 32, list(ROLES))
    loaded = StackelbergPolicy.from_pretrained(tiny_path, tmp_path).eval()
    for role in ROLES:
        ids, mask, _, action, _ = sample(policy, tokenizer, role)
        expected = policy.forward_actions(role, ids, mask, action.tokens, action.lengths)
        got = loaded.forward_actions(role, ids, mask, action.tokens, action.lengths)
        assert torch.equal(got[0], expected[0]) and torch.equal(got[1], expected[1])
    assert {id(p) for p in loaded.parameters() if p.requires_grad} == {
        id(p) for role in ROLES for p in loaded.role_parameters(role)}


# ------------------------------------------------------------------ QLoRA, checkpointing
def test_a_4bit_nf4_base_trains_the_leader_adapter_on_cpu(tiny_path, tokenizer):
    policy = make_policy(tiny_path, load_in_4bit=True, bnb_4bit_quant_type="nf4").train()
    base = policy.peft_model.get_base_model()
    assert isinstance(base.model.layers[0].self_attn.q_proj.base_layer, Linear4bit)
    assert set(policy.peft_model.peft_config) == set(ROLES)
    optimizer = torch.optim.AdamW(policy.role_parameters("leader"), lr=1e-2)
    before = snapshot(policy)
    loss = ppo_like_loss(policy, "leader", tokenizer)
    loss.backward()
    optimizer.step()
    assert torch.isfinite(loss)
    after = dict(policy.named_parameters())
    assert any(not torch.equal(p, before[n]) for n, p in after.items() if "lora_B.leader." in n)
    assert all(torch.equal(p, before[n]) for n, p in after.items() if ".follower." in n)


def test_gradient_checkpointing_gives_the_same_gradients(tiny_path, tokenizer):
    grads = []
    for checkpointing in (False, True):
        config = model_config(tiny_path, lora_dropout=0.0)
        base = load_base_model(config, gradient_checkpointing=checkpointing)
        assert base.is_activation_checkpointing == checkpointing
        policy = StackelbergPolicy(base, lora_config(config), value_head_hidden=32).train()
        perturb(policy, "leader", seed=7)  # nonzero B: gradients reach A through the layers
        loss = ppo_like_loss(policy, "leader", tokenizer)
        loss.backward()
        grads.append([p.grad for p in policy.role_parameters("leader")])
    assert all(g is not None and torch.isfinite(g).all() for g in grads[1])
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(*grads, strict=True))


def test_a_backward_after_a_role_switch_is_refused_under_checkpointing(tiny_path, tokenizer):
    config = model_config(tiny_path)
    base = load_base_model(config, gradient_checkpointing=True)
    policy = StackelbergPolicy(base, lora_config(config), value_head_hidden=32).train()
    loss = ppo_like_loss(policy, "leader", tokenizer)
    policy.set_role("follower")  # the recompute would run the follower adapter
    with pytest.raises(RuntimeError, match="backward of forward_actions\\('leader'\\)"):
        loss.backward()
