"""The frozen trunk (trainers.policy.trunk): top-k adapters, trunk states computed once, exact.

A 4-layer tiny Llama with adapters on its top 2 layers samples a decision batch with mixed I
(I = 3, 5 and 11: meta-prompts of several lengths, left padding), keeping each row's boundary
states. The PPO forward on those states (layers 2-3 only) gives the full forward's log-probs,
values and reference logits within 1e-5 and its gradients within 1e-4 relative, for both roles,
with the shared prefix on and off, with and without gradient checkpointing, with the rollout's
prefix cache on and off, and with the states recomputed when the budget keeps none.
"""

import dataclasses

import numpy as np
import pytest
import torch
from accelerate import Accelerator
from test_shared_prefix import TEMPERATURE
from test_speed import decision_inputs  # tests/ is on sys.path under pytest
from trl import ModelConfig

from grammars import ROLES
from trainers.pag.sampler import replay_masks
from trainers.policy.base_model import load_base_model, lora_config
from trainers.policy.encoding import PromptEncoder
from trainers.policy.models import StackelbergPolicy
from trainers.policy.named_models import build_tiny_model
from trainers.policy.trunk import TrunkStore
from trainers.ppo import token_logprobs
from trainers.stackelberg.config import StackelbergPPOConfig
from trainers.stackelberg.rollout import RolloutWorker
from trainers.stackelberg.update import minibatch_losses, pass_minibatches

LAYERS, TOP = 4, 2
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def deep(tmp_path_factory):
    model, tokenizer = build_tiny_model(tmp_path_factory.mktemp("deep"), layers=LAYERS)
    return model.name_or_path, tokenizer


def make_policy(path, k=TOP, checkpointing=False, budget_gib=2.0, **quantization):
    config = ModelConfig(model_name_or_path=path, lora_r=4, lora_alpha=8, lora_dropout=0.0,
                         lora_target_modules="all-linear", **quantization)
    base = load_base_model(config, gradient_checkpointing=checkpointing)
    policy = StackelbergPolicy(base, lora_config(config), value_head_hidden=32, seed=0,
                               trainable_layers=k)
    policy.trunk = TrunkStore(budget_gib)
    with torch.no_grad():  # adapters away from B = 0
        generator = torch.Generator().manual_seed(1)
        for name, parameter in policy.peft_model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0.0, 0.2, generator=generator)
    return policy


def epoch_config(k: int) -> StackelbergPPOConfig:
    """One short epoch over I in {3, 5, 11} (several meta-prompt lengths) with k top layers."""
    return StackelbergPPOConfig(
        scenario={"cell": {"ue_counts": [3, 5, 11], "n_rbgs": 2, "episode_ttis": 2}},
        n_envs=3, episodes_per_epoch=3, minibatch_size=64, temperature_start=0.7,
        trainable_layers=k)


def layer_calls(policy, index):
    """Records every forward of decoder layer ``index``."""
    seen = []
    layer = policy.peft_model.get_base_model().model.layers[index]
    return seen, layer.register_forward_hook(lambda m, a, out: seen.append(1))


def sampled(policy, tokenizer, role, rollout_prefix=True):
    ids, mask, grammars, prefix = decision_inputs(policy, tokenizer, role, (3, 5, 11), 5, 0)
    trunk_ids = []
    action, _ = policy.generate_actions(role, ids, mask, grammars, temperature=TEMPERATURE,
                                        generator=torch.Generator().manual_seed(0),
                                        prefix_lengths=prefix if rollout_prefix else None,
                                        trunk_out=trunk_ids)
    prompts = [r[m.bool()].tolist() for r, m in zip(ids, mask, strict=True)]
    tokens = [r[:n].tolist() for r, n in zip(action.tokens, action.lengths, strict=True)]
    trunk = policy.trunk_rows(trunk_ids, prompts, tokens)
    masks = replay_masks(grammars, action.tokens, action.lengths)
    return (ids, mask, action.tokens, action.lengths, masks), prefix, trunk, action


def run(policy, role, batch, prefix, trunk):
    ids, mask, tokens, lengths, masks = batch
    logits, values = policy.forward_actions(role, ids, mask, tokens, lengths, prefix, trunk)
    logp = token_logprobs(logits, masks, tokens, TEMPERATURE)
    reference = policy.reference_logits(role, ids, mask, tokens, lengths, prefix, trunk)
    kl = logp - token_logprobs(reference, masks, tokens, TEMPERATURE)
    loss = -logp.sum(1).mean() + (values - 1.0).square().mean() + 0.1 * kl.sum(1).mean()
    return logp, values, reference, loss


def test_adapters_sit_on_the_top_layers_only(deep):
    policy = make_policy(deep[0])
    layers = {int(name.split(".layers.")[1].split(".")[0])
              for role in ROLES for name, _ in policy.peft_model.named_parameters()
              if f".{role}." in name and "lora_" in name}
    assert layers == set(range(LAYERS - TOP, LAYERS))
    assert (policy.trainable_layers, policy.boundary) == (TOP, LAYERS - TOP)
    assert policy.peft_model.peft_config["leader"].layers_to_transform == [2, 3]
    everywhere = make_policy(deep[0], k=0)
    assert (everywhere.trainable_layers, everywhere.boundary) == (0, 0)


def test_trainable_layers_beyond_the_model_is_refused(deep):
    with pytest.raises(ValueError, match=r"trainable_layers = 5 is invalid; allowed: an "
                                         r"integer in \[0, 4\]"):
        make_policy(deep[0], k=5)


@pytest.mark.parametrize("rollout_prefix", [True, False])
@pytest.mark.parametrize("shared", [True, False])
@pytest.mark.parametrize("checkpointing", [False, True])
@pytest.mark.parametrize("role", ROLES)
def test_the_top_layers_on_trunk_states_equal_the_full_forward(deep, role, checkpointing, shared,
                                                               rollout_prefix):
    path, tokenizer = deep
    policy = make_policy(path, checkpointing=checkpointing).train()
    batch, prefix, trunk, action = sampled(policy, tokenizer, role, rollout_prefix)
    assert len({int(n) for n in prefix}) > 1  # several meta-prompt lengths: left padding
    prefix = prefix if shared else None
    out = {}
    for cached in (False, True):
        policy.zero_grad(set_to_none=True)
        bottom, handle = layer_calls(policy, 0)
        logp, values, reference, loss = run(policy, role, batch, prefix,
                                            trunk if cached else None)
        loss.backward()
        handle.remove()
        assert bool(bottom) != cached  # the trunk path never runs the trunk
        grads = {n: p.grad.clone() for n, p in policy.named_parameters() if p.grad is not None}
        out[cached] = logp.detach(), values.detach(), reference, grads
    (logp, values, reference, grads), (logp_c, values_c, reference_c, grads_c) = (
        out[False], out[True])
    torch.testing.assert_close(logp_c, logp, atol=1e-5, rtol=0)
    torch.testing.assert_close(logp_c, action.logprobs, atol=1e-5, rtol=0)  # first ratio 1
    torch.testing.assert_close(values_c, values, atol=1e-5, rtol=0)
    torch.testing.assert_close(reference_c, reference, atol=1e-5, rtol=0)
    assert grads_c.keys() == grads.keys() == {
        n for n, p in policy.named_parameters()
        if id(p) in {id(q) for q in policy.role_parameters(role)}}
    for name, grad in grads.items():
        scale = grad.abs().max().clamp(min=1e-12)
        assert (grads_c[name] - grad).abs().max() / scale < 1e-4, name


def worst_relative(grads: dict, other: dict) -> float:
    return max(float((other[n] - g).abs().max() / g.abs().max().clamp(min=1e-12))
               for n, g in grads.items())


@pytest.mark.parametrize("role", ROLES)
def test_a_4bit_nf4_trunk_gives_the_full_forwards_logprobs_and_gradients(deep, role):
    """bitsandbytes' CPU 4-bit matmuls are not shape-invariant: the full forward with the
    shared prefix off and on (the same maths) already differ by ~2e-4 in log-probs and ~1e-3
    relative in some gradients. The trunk path is compared with today's default update path
    (full forward, shared prefix on): log-probs, values and reference within 1e-5, no further
    from the sampled log-probs (first ratio) than that path (which is ~2e-4 off in 4-bit
    where fp32 is exact), gradients as close as the two layouts are, + 1e-4."""
    from bitsandbytes.nn import Linear4bit

    path, tokenizer = deep
    policy = make_policy(path, load_in_4bit=True, bnb_4bit_quant_type="nf4").train()
    layers = policy.peft_model.get_base_model().model.layers
    assert isinstance(layers[0].self_attn.q_proj, Linear4bit)  # trunk: 4-bit, no adapter
    assert isinstance(layers[-1].self_attn.q_proj.base_layer, Linear4bit)
    batch, prefix, trunk, action = sampled(policy, tokenizer, role)
    out = {}
    for name, (shared, states) in {"full": (prefix, None), "layout": (None, None),
                                   "trunk": (prefix, trunk)}.items():
        policy.zero_grad(set_to_none=True)
        logp, values, reference, loss = run(policy, role, batch, shared, states)
        loss.backward()
        grads = {n: p.grad.clone() for n, p in policy.named_parameters() if p.grad is not None}
        out[name] = logp.detach(), values.detach(), reference, grads
    (logp, values, reference, grads), (logp_c, values_c, reference_c, grads_c) = (
        out["full"], out["trunk"])
    torch.testing.assert_close(logp_c, logp, atol=1e-5, rtol=0)
    torch.testing.assert_close(values_c, values, atol=1e-5, rtol=0)
    torch.testing.assert_close(reference_c, reference, atol=1e-5, rtol=0)
    # the first PPO ratio: no further from the sampled log-probs than today's update path
    sampled_gap = (logp - action.logprobs).abs().max()
    assert (logp_c - action.logprobs).abs().max() <= sampled_gap + 1e-5
    assert grads_c.keys() == grads.keys() and grads
    assert worst_relative(grads, grads_c) <= worst_relative(grads, out["layout"][3]) + 1e-4


def test_past_the_budget_the_states_are_recomputed_equal(deep):
    path, tokenizer = deep
    kept = make_policy(path)
    batch, prefix, trunk, _ = sampled(kept, tokenizer, "leader")
    dropped = make_policy(path, budget_gib=0.0)
    _, _, recomputed, _ = sampled(dropped, tokenizer, "leader")
    stats = dropped.trunk.stats()
    assert stats["kept_gib"] == 0.0 and stats["recomputed_rows"] == len(trunk)
    assert kept.trunk.stats()["recomputed_rows"] == 0 and kept.trunk.stats()["kept_gib"] > 0
    assert [t.shape for t in recomputed] == [t.shape for t in trunk]
    for a, b in zip(recomputed, trunk, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


def test_a_ppo_epoch_keeps_one_state_row_per_decision_and_starts_at_ratio_one(deep):
    path, tokenizer = deep
    config = epoch_config(TOP)
    policy = make_policy(path)
    worker = RolloutWorker(policy, tokenizer, PromptEncoder(tokenizer), config)
    leader, follower, _ = worker.collect(0)
    assert len(leader.trunk_ids) == len(leader) and len(follower.trunk_ids) == len(follower)
    assert len(set(leader.trunk_ids + follower.trunk_ids)) == len(leader) + len(follower)
    policy.ppo_mode()
    eos = pad = tokenizer.eos_token_id
    for d in (leader, follower):
        role = "leader" if d is leader else "follower"
        rows = pass_minibatches(d, 1, config, np.random.default_rng(0))[0]
        bottom, handle = layer_calls(policy, 0)
        with Accelerator(cpu=True).autocast():
            out = minibatch_losses(policy, role, d, rows, config, eos, pad, {})
        handle.remove()
        assert not bottom  # neither the policy nor the reference ran the trunk
        assert abs(float(out["ratio_max"]) - 1.0) < 1e-5 and float(out["clipfrac"]) == 0.0
    # evaluation play keeps nothing
    before = policy.trunk.stats()["kept_gib"]
    worker.play(10**9, 0, 0.3)
    assert policy.trunk.stats()["kept_gib"] == before


def test_adapters_saved_with_another_k_are_refused_in_one_line(save_llm, run_command,
                                                              tmp_path):
    top = save_llm(tmp_path / "top1", trainable_layers=1)
    out = run_command("train", "--init_adapters", top, "--output_dir", str(tmp_path / "run"),
                      "--total_epochs", "0")
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr.strip().splitlines() == [
        f"agentic-mac train: error: StackelbergPPOConfig.init_adapters = {top!r} holds adapters "
        "saved with trainable_layers = 1, but this run has trainable_layers = 0; allowed: "
        "adapters saved with trainable_layers = 0, or set trainable_layers: 1"]


def test_top_layer_adapters_reload_with_their_k_and_old_ones_with_all_layers(save_llm, tiny_path,
                                                                              tmp_path):
    top = StackelbergPolicy.from_pretrained(tiny_path, save_llm(tmp_path / "top",
                                                                trainable_layers=1))
    every = StackelbergPolicy.from_pretrained(tiny_path, save_llm(tmp_path / "all"))
    assert (top.trainable_layers, top.boundary) == (1, 1)
    assert (every.trainable_layers, every.boundary) == (0, 0)
    with pytest.raises(ValueError, match="trainable_layers = 0, but this run has "
                                         "trainable_layers = 1"):
        top.load_adapter_weights(tmp_path / "all")


@pytest.mark.parametrize("k", [0, TOP])
def test_the_allowed_vocabulary_head_gives_the_full_heads_update(deep, k):
    """allowed_vocab_head: the LM head on the minibatch's allowed tokens only (U of V) gives
    the full head's losses and gradients; the masked distributions are the same."""
    from trainers.stackelberg.update import allowed_vocab

    path, tokenizer = deep
    config = epoch_config(k)
    policy = make_policy(path, k=k).train()
    worker = RolloutWorker(policy, tokenizer, PromptEncoder(tokenizer), config)
    leader, follower, _ = worker.collect(0)
    policy.ppo_mode()
    eos = pad = tokenizer.eos_token_id
    for role, d in (("leader", leader), ("follower", follower)):
        rows = np.arange(len(d))
        out = {}
        for allowed in (False, True):
            policy.zero_grad(set_to_none=True)
            c = dataclasses.replace(config, allowed_vocab_head=allowed)
            losses = minibatch_losses(policy, role, d, rows, c, eos, pad, {})
            losses["loss"].backward()
            grads = {n: p.grad.clone() for n, p in policy.named_parameters()
                     if p.grad is not None}
            out[allowed] = {k: float(v.detach()) for k, v in losses.items()}, grads
        (full, grads), (scored, grads_s) = out[False], out[True]
        for key in full:
            assert scored[key] == pytest.approx(full[key], abs=1e-5), (role, key)
        for name, grad in grads.items():
            scale = grad.abs().max().clamp(min=1e-12)
            assert (grads_s[name] - grad).abs().max() / scale < 1e-4, name
    masks = torch.zeros(2, 3, 50, dtype=torch.bool)
    masks[0, :, [4, 9]] = True
    masks[1, :, [9, 30]] = True
    tokens = torch.tensor([[4, 9, 9], [30, 9, 30]])
    ids, sub, sub_tokens = allowed_vocab(masks, tokens)
    assert ids.tolist() == [4, 9, 30] and sub.shape == (2, 3, 3)
    assert ids[sub_tokens].tolist() == tokens.tolist()


def test_a_k_beyond_the_model_is_one_line_from_the_command(run_command, tmp_path):
    out = run_command("train", "--trainable_layers", "99", "--total_epochs", "0",
                      "--output_dir", str(tmp_path / "run"))
    assert out.returncode == 2 and "Traceback" not in out.stderr  # after the model's build
    assert out.stderr.strip().splitlines()[-1] == (
        "agentic-mac train: error: StackelbergPPOConfig.trainable_layers = 99 is invalid; "
        "allowed: an integer in [0, 2] (0 = all 2 layers of the model)")
