"""Speed paths change nothing: meta-prompt KV reuse, reference reuse, and bench_train.py runs."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from accelerate import Accelerator
from trl import ModelConfig

from textgame.config import CellConfig, ScenarioConfig, replace_checked
from textgame.text_env import TextStackelbergEnv
from trainers.pag.sampler import compile_action_grammar
from trainers.policy.base_model import load_base_model, lora_config
from trainers.policy.encoding import PromptEncoder, meta_prompt_lines
from trainers.policy.models import StackelbergPolicy
from trainers.policy.named_models import build_tiny_model
from trainers.stackelberg.config import StackelbergPPOConfig
from trainers.stackelberg.rollout import RolloutWorker
from trainers.stackelberg.update import ppo_update

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    model, tokenizer = build_tiny_model(tmp_path_factory.mktemp("tiny-models"))
    return model.name_or_path, tokenizer


def make_policy(path):
    config = ModelConfig(model_name_or_path=path, lora_r=4, lora_alpha=8,
                         lora_target_modules="all-linear")
    policy = StackelbergPolicy(load_base_model(config), lora_config(config),
                               value_head_hidden=32, seed=0)
    with torch.no_grad():  # adapters away from B = 0, so they change the prefix states
        generator = torch.Generator().manual_seed(1)
        for name, parameter in policy.peft_model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0.0, 0.2, generator=generator)
    return policy


def decision_inputs(policy, tokenizer, role, ue_counts, n_envs, seed):
    """``(ids, mask, grammars, prefix lengths)`` of one decision batch of ``role``: a text game
    of ``n_envs`` envs with I drawn from ``ue_counts`` (several meta-prompts), DCM "1 2 3 0"."""
    cell = replace_checked(CellConfig(), ue_counts=tuple(ue_counts))
    env = TextStackelbergEnv(ScenarioConfig(cell=cell), n_envs=n_envs)
    prompts = env.reset(seed)
    n_active = env.game.sim.active.sum(axis=1)
    if role == "follower":
        prompts = env.step_leader(["1 2 3 0"] * n_envs)
        n_active = [n_active[b] for b, _ in env.follower_slots]
    grammars = [compile_action_grammar(tokenizer, role, int(i), 4, 4,
                                       vocab_size=policy.vocab_size) for i in n_active]
    encoder = PromptEncoder(tokenizer)
    ids, mask = encoder(prompts)
    template = getattr(env.builder, f"{role}_template")
    prefix = encoder.prefix_lengths(prompts, meta_prompt_lines(env.builder.render, template))
    return ids, mask, grammars, prefix


def decide(policy, tokenizer, role, reuse, seed=0):
    """One decision batch of ``role`` over envs with I in {3, 4, 5} (several meta-prompts)."""
    ids, mask, grammars, prefix = decision_inputs(policy, tokenizer, role, (3, 4, 5), 6, seed)
    return policy.generate_actions(role, ids, mask, grammars, temperature=0.8,
                                   generator=torch.Generator().manual_seed(seed),
                                   prefix_lengths=prefix if reuse else None)


@pytest.mark.parametrize("role", ["leader", "follower"])
def test_prefix_reuse_gives_the_plain_paths_actions_logprobs_and_values(tiny, role):
    path, tokenizer = tiny
    policy = make_policy(path)
    plain, plain_values = decide(policy, tokenizer, role, reuse=False)
    for _ in range(2):  # first call fills the cache, the second reads it
        reused, values = decide(policy, tokenizer, role, reuse=True)
        assert torch.equal(reused.tokens, plain.tokens)
        assert reused.texts == plain.texts
        torch.testing.assert_close(reused.logprobs, plain.logprobs, atol=1e-5, rtol=0)
        torch.testing.assert_close(values, plain_values, atol=1e-5, rtol=0)
    assert len(policy.prefix_cache) > 1  # several distinct meta-prompts (I or UE number)
    assert policy.prefix_cache.hits > 0


def test_prefix_lengths_cover_exactly_the_meta_prompt(tiny):
    _, tokenizer = tiny
    env = TextStackelbergEnv(n_envs=2)
    prompts = env.reset(0)
    encoder = PromptEncoder(tokenizer)
    encoder(prompts)
    lines = meta_prompt_lines(env.builder.render, env.builder.leader_template)
    assert lines == env.builder.leader_template.count("\n") + 1
    lengths = encoder.prefix_lengths(prompts, lines)
    for prompt, n in zip(prompts, lengths, strict=True):
        meta = "".join(prompt.splitlines(keepends=True)[:lines])
        assert n == len(tokenizer(meta)["input_ids"])


def test_prefix_cache_is_rebuilt_after_an_optimizer_step(tiny):
    path, tokenizer = tiny
    policy = make_policy(path)
    decide(policy, tokenizer, "leader", reuse=True)
    stamp, misses = policy.adapter_stamp("leader"), policy.prefix_cache.misses
    follower_stamp = policy.adapter_stamp("follower")
    optimizer = torch.optim.AdamW(policy.role_parameters("leader"), lr=1e-2)
    for p in policy.role_parameters("leader"):
        p.grad = torch.ones_like(p)
    optimizer.step()
    assert policy.adapter_stamp("leader") != stamp
    assert policy.adapter_stamp("follower") == follower_stamp
    reused, values = decide(policy, tokenizer, "leader", reuse=True)
    assert policy.prefix_cache.misses > misses  # stale states dropped, prefixes recomputed
    plain, plain_values = decide(policy, tokenizer, "leader", reuse=False)
    assert torch.equal(reused.tokens, plain.tokens)
    torch.testing.assert_close(reused.logprobs, plain.logprobs, atol=1e-5, rtol=0)
    torch.testing.assert_close(values, plain_values, atol=1e-5, rtol=0)


def test_reference_logprobs_reused_across_ppo_passes_change_no_metric(tiny, monkeypatch):
    import trainers.stackelberg.update as update

    path, tokenizer = tiny
    cell = {"ue_counts": [2, 3], "n_rbgs": 2, "episode_ttis": 3}
    config = StackelbergPPOConfig(scenario={"cell": cell}, n_envs=2, episodes_per_epoch=2,
                                  minibatch_size=4, follower_ppo_epochs=3)
    worker = RolloutWorker(make_policy(path), tokenizer, PromptEncoder(tokenizer), config)
    _, follower, _ = worker.collect(0)
    original = update.reference_logprobs
    metrics = []
    for reuse in (True, False):
        if not reuse:  # no cache: the reference forward runs on every pass, as before
            monkeypatch.setattr(update, "reference_logprobs",  # cache (argument 9) off
                                lambda *a: original(*a[:9], None, *a[10:]))
        policy = make_policy(path)
        optimizer = torch.optim.AdamW(policy.role_parameters("follower"), lr=1e-3)
        metrics.append(ppo_update(policy, "follower", follower, optimizer, config,
                                  Accelerator(cpu=True), np.random.default_rng(0),
                                  tokenizer.eos_token_id, tokenizer.pad_token_id))
    for key in metrics[0]:
        assert metrics[1][key] == pytest.approx(metrics[0][key], abs=1e-5), key


def test_bench_train_profiles_every_update_path_on_the_tiny_spec(tmp_path):
    cmd = [sys.executable, str(ROOT / "benchmarks" / "bench_train.py"), "--spec", "tiny",
           "--precision", "fp32-lora", "--envs", "2", "--ttis", "2", "--ues", "2", "--rbgs", "2",
           "--minibatch", "8", "--cache-dir", str(tmp_path), "--device", "cpu",
           "--shared-prefix", "0", "1", "--group-by-prefix", "0", "1", "--json"]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout)
    assert {"model", "I", "N", "T", "device", "paper", "targets", "runs"} <= set(result)
    off, off_grouped, on, on_grouped = result["runs"]
    assert [(r["shared_prefix"], r["grouped"]) for r in result["runs"]] == [
        (False, False), (False, True), (True, False), (True, True)]
    for run in result["runs"]:
        for key in ("rollout_s", "update_s", "epoch_s", "decisions_per_s", "tti_latency_ms",
                    "episode_s", "peak_rss_gib", "prefill_s", "decode_s", "mask_s",
                    "update_forward_s", "backward_s", "optimizer_s", "reference_s",
                    "update_masks_s", "update_tokens_per_s", "update_gflop_per_s",
                    "matmul_gflop_per_s", "peak_share", "update_peak_gib"):
            assert run[key] > 0, key
        assert run["peak_gpu_gib"] is None and run["B"] == 2 and run["precision"] == "fp32-lora"
        assert run["decisions"] == 2 * 2 * (1 + 2)  # B x T x (leader + I followers)
        assert run["peak_rss_gib"] >= run["update_peak_gib"]  # the process peak holds the update
    # the same decisions (same seeds) and tokens; the shared meta-prompts cost fewer FLOPs
    tokens = [r["update_tokens_per_s"] * r["update_s"] for r in (off, on)]
    assert tokens[1] == pytest.approx(tokens[0], rel=1e-9)
    assert on["update_gflops"] < off["update_gflops"]


def test_bench_train_refuses_a_spec_that_is_no_checkpoint(tmp_path):
    cmd = [sys.executable, str(ROOT / "benchmarks" / "bench_train.py"), "--spec",
           str(tmp_path / "missing"), "--device", "cpu"]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.splitlines()[-1].endswith(
        "no config.json there; allowed: 'tiny', 'llama-3.2-1b' or a checkpoint directory "
        "(model + tokenizer)")


def test_bench_train_runs_every_k_side_by_side_and_the_trunk_costs_fewer_flops(tmp_path):
    cmd = [sys.executable, str(ROOT / "benchmarks" / "bench_train.py"), "--spec", "tiny",
           "--precision", "fp32-lora", "--envs", "2", "--ttis", "2", "--ues", "2", "--rbgs", "2",
           "--minibatch", "8", "--cache-dir", str(tmp_path), "--device", "cpu",
           "--trainable-layers", "0", "1"]
    done = subprocess.run([*cmd, "--json"], capture_output=True, text=True, cwd=ROOT,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    every, top = json.loads(done.stdout)["runs"]
    assert (every["trainable_layers"], top["trainable_layers"]) == (0, 1)
    for run in (every, top):
        for key in ("epoch_s", "rollout_s", "update_s", "update_ms_per_decision",
                    "peak_rss_gib", "peak_share"):
            assert run[key] > 0, key
        assert run["decisions"] == 2 * 2 * (1 + 2)
    # the same decisions; the top layer alone runs in the update (one of the tiny model's two)
    assert top["update_gflops"] < 0.75 * every["update_gflops"]


def test_bench_train_refuses_a_k_the_model_does_not_have(tmp_path):
    cmd = [sys.executable, str(ROOT / "benchmarks" / "bench_train.py"), "--spec", "tiny",
           "--cache-dir", str(tmp_path), "--device", "cpu", "--trainable-layers", "0", "3"]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.splitlines()[-1].endswith(
        "--trainable-layers 3: allowed: integers in [0, 2] (0 = all 2 layers of this model)")
