"""The PPO update's shared meta-prompts (trainers.policy.prefix_cache.prefix_states) are exact.

A minibatch of decisions with mixed I (I = 11 next to 3 and 5: meta-prompts of different
lengths, left padding) runs once in full per row and once with each distinct meta-prompt
computed once: log-probs, values and reference logits agree within 1e-5 (fp32 summation order),
the gradients of every trainable parameter within 1e-4 relative, with and without gradient
checkpointing, for both roles.
"""

import dataclasses

import numpy as np
import pytest
import torch
from accelerate import Accelerator
from test_speed import decision_inputs  # tests/ is on sys.path under pytest
from trl import ModelConfig

from grammars import ROLES
from trainers.pag.sampler import replay_masks
from trainers.policy.base_model import load_base_model, lora_config
from trainers.policy.encoding import PromptEncoder
from trainers.policy.models import StackelbergPolicy
from trainers.policy.prefix_cache import split_prefixes
from trainers.ppo import token_logprobs
from trainers.stackelberg.config import StackelbergPPOConfig
from trainers.stackelberg.rollout import RolloutWorker
from trainers.stackelberg.update import minibatch_losses, pass_minibatches, ppo_update

TEMPERATURE = 0.8
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tokenizer(tiny_path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_path)


def make_policy(path, checkpointing=False, dtype=None):
    config = ModelConfig(model_name_or_path=path, lora_r=4, lora_alpha=8, lora_dropout=0.0,
                         lora_target_modules="all-linear")
    base = load_base_model(config, gradient_checkpointing=checkpointing)
    if dtype is not None:
        base = base.to(dtype)
    policy = StackelbergPolicy(base, lora_config(config), value_head_hidden=32, seed=0)
    with torch.no_grad():  # adapters away from B = 0: they change the prefix states
        generator = torch.Generator().manual_seed(1)
        for name, parameter in policy.peft_model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0.0, 0.2, generator=generator)
    return policy


def decisions(policy, tokenizer, role):
    """Sampled actions of one decision batch over envs with I in {3, 5, 11} and the inputs:
    meta-prompts of 2 (leader) and 3 (follower: UE 10 and 11) lengths."""
    ids, mask, grammars, prefix = decision_inputs(policy, tokenizer, role, (3, 5, 11), 5, 0)
    action, _ = policy.generate_actions(role, ids, mask, grammars, temperature=TEMPERATURE,
                                        generator=torch.Generator().manual_seed(0))
    masks = replay_masks(grammars, action.tokens, action.lengths)
    return ids, mask, action.tokens, action.lengths, masks, prefix


def losses(policy, role, batch, prefix):
    """(logp (B, T), values (B,), reference logits, loss) of one PPO-like forward."""
    ids, mask, tokens, lengths, masks, _ = batch
    logits, values = policy.forward_actions(role, ids, mask, tokens, lengths, prefix)
    logp = token_logprobs(logits, masks, tokens, TEMPERATURE)
    reference = policy.reference_logits(role, ids, mask, tokens, lengths, prefix)
    kl = logp - token_logprobs(reference, masks, tokens, TEMPERATURE)
    loss = -logp.sum(1).mean() + (values - 1.0).square().mean() + 0.1 * kl.sum(1).mean()
    return logp, values, reference, loss


def prefix_rows(policy, module="embed_tokens"):
    """Records the batch size of every forward through ``module`` (of the first layer)."""
    seen = []
    base = policy.peft_model.get_base_model().model
    target = getattr(base.layers[0], module, None) or getattr(base, module)
    return seen, target.register_forward_hook(lambda m, a, out: seen.append(a[0].shape[0]
                                                                            if a else 0))


@pytest.mark.parametrize("checkpointing", [False, True])
@pytest.mark.parametrize("role", ROLES)
def test_shared_prefix_forward_equals_the_plain_forward(tiny_path, tokenizer, role,
                                                        checkpointing):
    policy = make_policy(tiny_path, checkpointing).train()  # train: checkpointing active
    batch = decisions(policy, tokenizer, role)
    prefix = batch[-1]
    split = split_prefixes(batch[0], batch[1], prefix)
    distinct = split.prefix_ids.shape[0]
    assert 1 < distinct < len(prefix)  # several meta-prompts, each shared by several rows
    assert len({int(n) for n in prefix}) > 1  # of different lengths: left-padded prefixes
    out = {}
    for shared in (False, True):
        policy.zero_grad(set_to_none=True)
        seen, handle = prefix_rows(policy)
        logp, values, reference, loss = losses(policy, role, batch, prefix if shared else None)
        handle.remove()
        recomputed, handle = prefix_rows(policy, "self_attn")
        loss.backward()
        handle.remove()
        assert bool(recomputed) == checkpointing  # the backward re-ran layers: truly checkpointed
        grads = {name: p.grad.clone() for name, p in policy.named_parameters()
                 if p.grad is not None}
        out[shared] = logp.detach(), values.detach(), reference, grads, seen
    (logp, values, reference, grads, seen), (logp_s, values_s, reference_s, grads_s, seen_s) = (
        out[False], out[True])
    assert seen_s == [distinct, len(prefix), distinct, len(prefix)]  # policy, then reference
    assert seen == [len(prefix), len(prefix)]
    torch.testing.assert_close(logp_s, logp, atol=1e-5, rtol=0)
    torch.testing.assert_close(values_s, values, atol=1e-5, rtol=0)
    torch.testing.assert_close(reference_s, reference, atol=1e-5, rtol=0)
    assert grads_s.keys() == grads.keys() == {
        name for name, p in policy.named_parameters() if id(p) in
        {id(q) for q in policy.role_parameters(role)}}
    for name, grad in grads.items():
        scale = grad.abs().max().clamp(min=1e-12)
        assert (grads_s[name] - grad).abs().max() / scale < 1e-4, name


@pytest.fixture(scope="module")
def epoch(tiny_path, tokenizer):
    """One epoch's decisions of both roles, I in {3, 5, 11} (several meta-prompt lengths)."""
    config = StackelbergPPOConfig(
        scenario={"cell": {"ue_counts": [3, 5, 11], "n_rbgs": 2, "episode_ttis": 2}},
        n_envs=3, episodes_per_epoch=3, minibatch_size=64, temperature_start=0.7,
        prompt_format=1)  # format 1: a follower meta-prompt per UE number, several lengths
    worker = RolloutWorker(make_policy(tiny_path), tokenizer, PromptEncoder(tokenizer), config)
    leader, follower, _ = worker.collect(0)
    return config, {"leader": leader, "follower": follower}


@pytest.mark.parametrize("checkpointing", [False, True])
@pytest.mark.parametrize("role", ROLES)
def test_the_first_ppo_ratio_is_one_and_the_update_is_unchanged(tiny_path, tokenizer, epoch,
                                                                 role, checkpointing):
    config, decisions = epoch
    d = decisions[role]
    assert len(set(d.prefix_lengths)) > 1 and min(d.prefix_lengths) > 0
    rows = np.arange(len(d))  # one minibatch: mixed I, left padding
    out = {}
    for shared in (False, True):
        args = dataclasses.replace(config, shared_prefix_update=shared,
                                   gradient_checkpointing=checkpointing)
        policy = make_policy(tiny_path, checkpointing).ppo_mode()
        first = minibatch_losses(policy, role, d, rows, args, tokenizer.eos_token_id,
                                 tokenizer.pad_token_id)
        recomputed, handle = prefix_rows(policy, "self_attn")
        first["loss"].backward()
        handle.remove()
        assert bool(recomputed) == checkpointing  # ppo_mode keeps checkpointing on
        policy.zero_grad(set_to_none=True)
        assert float(first["ratio_max"]) == pytest.approx(1.0, abs=1e-5)
        assert float(first["ratio_mean"]) == pytest.approx(1.0, abs=1e-5)
        assert float(first["clipfrac"]) == 0.0
        optimizer = torch.optim.AdamW(policy.role_parameters(role), lr=1e-3)
        out[shared] = ppo_update(policy, role, d, optimizer, args, Accelerator(cpu=True),
                                 np.random.default_rng(0), tokenizer.eos_token_id,
                                 tokenizer.pad_token_id)
    for key, value in out[False].items():
        assert out[True][key] == pytest.approx(value, rel=1e-4, abs=1e-5), key


def _meta_prompt(d, i):
    return tuple(d.prompts[i][:d.prefix_lengths[i]])


@pytest.mark.parametrize("role", ROLES)
def test_grouped_minibatches_partition_a_pass_and_hold_fewer_meta_prompts(epoch, role):
    config, decisions = epoch
    d = decisions[role]
    count = 3
    plain = pass_minibatches(d, count, config, np.random.default_rng(0))
    shuffle = np.random.default_rng(0).permutation(len(d))
    assert all(np.array_equal(a, b) for a, b in zip(plain, np.array_split(shuffle, count),
                                                    strict=True))  # the default is unchanged
    grouped = pass_minibatches(d, count, dataclasses.replace(config, group_by_prefix=True),
                               np.random.default_rng(0))
    assert sorted(np.concatenate(grouped).tolist()) == list(range(len(d)))
    assert sorted(map(len, grouped)) == sorted(map(len, plain))
    keys = [[(_meta_prompt(d, i), len(d.prompts[i])) for i in rows] for rows in grouped]
    assert all(k == sorted(k) for k in keys)  # each minibatch is a run of the sorted order
    distinct = len({_meta_prompt(d, i) for i in range(len(d))})
    held = [sum(len({_meta_prompt(d, i) for i in rows}) for rows in parts)
            for parts in (plain, grouped)]
    assert held[1] <= distinct + count - 1 < held[0]  # a sorted order cut count - 1 times


def test_grouping_one_minibatch_changes_only_the_row_order(tiny_path, tokenizer, epoch):
    config, decisions = epoch
    d = decisions["follower"]
    assert len(d) <= config.minibatch_size  # one minibatch per pass
    out = {}
    for grouped in (False, True):
        policy = make_policy(tiny_path).ppo_mode()
        optimizer = torch.optim.AdamW(policy.role_parameters("follower"), lr=1e-3)
        out[grouped] = ppo_update(policy, "follower", d, optimizer,
                                  dataclasses.replace(config, group_by_prefix=grouped),
                                  Accelerator(cpu=True), np.random.default_rng(0),
                                  tokenizer.eos_token_id, tokenizer.pad_token_id)
    for key, value in out[False].items():
        assert out[True][key] == pytest.approx(value, rel=1e-4, abs=1e-5), key


def test_gathering_the_prefix_rows_is_bit_reproducible_at_two_threads():
    """Rows that share a meta-prompt send their gradients back through ``gather_rows``: summed
    in row order, the same bytes on every repeat at two threads (``states[group]`` sums them
    with parallel atomic adds: 11 of 30 repeats differed in this shape). A single prefix is an
    expanded view; the rows are exactly ``states[group]`` either way."""
    from trainers.policy.prefix_cache import gather_rows

    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        g = torch.Generator().manual_seed(0)
        states = torch.randn(5, 1, 120, 32, generator=g, requires_grad=True)  # (m, H, Lp, D)
        group = torch.randint(0, 5, (200,), generator=g)  # (B,)
        upstream = torch.randn(200, 1, 120, 32, generator=g)
        grads = []
        for _ in range(30):
            states.grad = None
            (gather_rows(states, group) * upstream).sum().backward()
            grads.append(states.grad.clone())
    finally:
        torch.set_num_threads(previous)
    assert all(torch.equal(grads[0], grad) for grad in grads[1:])
    assert torch.equal(gather_rows(states, group), states[group])
    one = states[:1]
    assert torch.equal(gather_rows(one, group[:7]), one[torch.zeros(7, dtype=torch.long)])
    assert gather_rows(one, group[:7]).data_ptr() == one.data_ptr()  # a view, no copy
