"""Expert seeding (paper §IV, design §6): expert prompt/completion data and SFT of one adapter."""

import copy
import math
import random
import re

import numpy as np
import pytest
import torch
from datasets import Features, Value
from peft import LoraConfig, get_peft_model
from trl import SFTTrainer

from textgame.config import CellConfig, ScenarioConfig, replace_checked
from textgame.game import StackelbergGame
from textgame.parsing import parse_dcm
from textgame.policies import make_follower, make_leader
from textgame.prompts import TextConfig
from trainers.policy.chat import chat_render
from trainers.policy.encoding import encode_prompts
from trainers.policy.named_models import build_tiny_model
from trainers.stackelberg.config import StackelbergPPOConfig
from trainers.stackelberg.seeding import expert_dataset, seed_adapter, seed_policy, sft_config

CELL = replace_checked(CellConfig(), ue_counts=(2, 3, 4), episode_ttis=5)
SCENARIO = ScenarioConfig(cell=CELL)
EPISODES, N_ENVS, SEED = 6, 4, 3  # two batches: 4 envs, then 2


def expert_play(leader: str, episodes: int = EPISODES, n_envs: int = N_ENVS, seed: int = SEED):
    """The numeric game played by the experts with expert_dataset's seeding; row-ordered.

    Returns (leader rows: (DCM, I_t)), (follower rows: (bitmap, UCM)) in the datasets' order.
    """
    leaders, followers = [], []
    expert, obedient = make_leader(leader, CELL), make_follower("dictator")
    remaining = episodes
    for batch_seed in np.random.SeedSequence(seed).spawn(math.ceil(episodes / n_envs)):
        b = min(n_envs, remaining)
        game_seed, policy_seed = batch_seed.spawn(2)
        game = StackelbergGame(SCENARIO, b)
        rng = np.random.default_rng(policy_seed)
        expert.reset(b, game.max_ues, game.n_rbgs, rng)
        obedient.reset(b, game.max_ues, game.n_rbgs, game.ucm_levels, rng)
        obs, done = game.reset(game_seed), False
        while not done:
            dcm = expert.act(obs)
            leaders += [(dcm[e], int(obs.n_active[e])) for e in range(b)]
            follower_obs = game.step_leader(dcm)
            bitmap, ucm = obedient.act(follower_obs)
            followers += [(bitmap[e, i], int(ucm[e, i]))
                          for e, i in np.argwhere(follower_obs.active)]
            step = game.step_followers(bitmap, ucm)
            obs, done = step.leader_obs, step.done
        remaining -= b
    return leaders, followers


@pytest.fixture(scope="module", params=["max_weight", "round_robin"])
def expert(request):
    return request.param, expert_dataset(SCENARIO, leader=request.param, episodes=EPISODES,
                                         n_envs=N_ENVS, seed=SEED)


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("tiny"))


def lora() -> LoraConfig:
    return LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, task_type="CAUSAL_LM",
                      target_modules=["q_proj", "k_proj", "v_proj", "o_proj"])


def two_adapter_model(tiny):
    base, _ = tiny
    base = type(base).from_pretrained(base.name_or_path, dtype=torch.float32)  # fresh weights
    model = get_peft_model(base, lora(), adapter_name="leader")
    model.add_adapter("follower", lora())
    return model


def adapter_params(model, name: str) -> dict[str, torch.Tensor]:
    return {k: p.detach().clone() for k, p in model.named_parameters() if f".{name}." in k}


def completion_log_prob(model, tokenizer, rows) -> float:
    """Sum over rows of log p(completion tokens, EOS | prompt) under the active adapter."""
    total = 0.0
    with torch.no_grad():
        for prompt, completion in zip(rows["prompt"], rows["completion"], strict=True):
            prompt_ids = tokenizer(prompt)["input_ids"]
            action_ids = tokenizer(completion, add_special_tokens=False)["input_ids"]
            ids = torch.tensor([prompt_ids + action_ids + [tokenizer.eos_token_id]])
            logp = model(input_ids=ids).logits[0, :-1].log_softmax(-1)
            targets = ids[0, len(prompt_ids):]
            total += logp[len(prompt_ids) - 1:].gather(-1, targets[:, None]).sum().item()
    return total


# ------------------------------------------------------------------------------- datasets
def test_datasets_have_prompt_and_completion_string_columns(expert):
    _, data = expert
    assert set(data) == {"leader", "follower"}
    for ds in data.values():
        assert ds.column_names == ["prompt", "completion"]
        assert ds.features == Features({"prompt": Value("string"),
                                        "completion": Value("string")})


def test_leader_has_one_row_per_episode_and_tti(expert):
    _, data = expert
    assert len(data["leader"]) == EPISODES * CELL.episode_ttis


def test_follower_has_one_row_per_active_ue_and_tti(expert):
    name, data = expert
    _, followers = expert_play(name)
    assert len(data["follower"]) == len(followers) > len(data["leader"])


def test_prompts_end_with_the_cue_and_completions_follow_without_space_or_eos(expert, tiny):
    _, data = expert
    eos = tiny[1].eos_token
    assert all(p.endswith("\nDCM:") for p in list(data["leader"]["prompt"]))
    assert all(p.endswith("\nAction:") for p in list(data["follower"]["prompt"]))
    for ds in data.values():
        assert all(c == c.strip() and not c.endswith(eos) for c in list(ds["completion"]))


def test_leader_completions_parse_for_their_prompts_ue_count(expert):
    _, data = expert
    leader = data["leader"].to_dict()
    for prompt, completion in zip(leader["prompt"], leader["completion"], strict=True):
        n_ues = len(re.findall(r"^UE\d+: ", prompt, flags=re.M))
        parse_dcm(completion, CELL.n_rbgs, n_ues)


def test_leader_completions_are_the_experts_dcms_of_the_numeric_game(expert):
    name, data = expert
    leaders, _ = expert_play(name)
    assert list(data["leader"]["completion"]) == [" ".join(map(str, dcm)) for dcm, _ in leaders]
    assert any(n_ues < CELL.max_ues for _, n_ues in leaders)  # several UE counts covered


def test_follower_completions_are_the_dcm_bits_and_capped_buffer(expert):
    _, data = expert
    follower = data["follower"].to_dict()
    for prompt, completion in zip(follower["prompt"], follower["completion"], strict=True):
        bits = re.search(r"^DCM ([01]+)$", prompt, flags=re.M).group(1)
        buffer = int(re.search(r"^buffer (\d+)$", prompt, flags=re.M).group(1))
        assert completion == f"{bits} {min(buffer, CELL.ucm_levels - 1)}"


def test_follower_completions_are_the_obedient_actions_of_the_numeric_game(expert):
    name, data = expert
    _, followers = expert_play(name)
    expected = ["".join("1" if bit else "0" for bit in bitmap) + f" {ucm}"
                for bitmap, ucm in followers]
    assert list(data["follower"]["completion"]) == expected
    assert any("1" in c.split()[0] for c in expected)  # some UEs were granted RBGs


def test_with_history_the_leader_prompt_shows_the_dcm_round_robin_continues():
    """history_ttis = 1: the leader prompt of TTI t >= 1 carries the DCM of TTI t - 1, from which
    the Round-Robin expert's DCM follows (its cycle over 1..I continues): readable from the text."""
    data = expert_dataset(SCENARIO, leader="round_robin", episodes=2, n_envs=2, seed=0,
                          text_config=TextConfig(history_ttis=1))
    prompts, completions = data["leader"]["prompt"], data["leader"]["completion"]
    assert len(prompts) == 2 * CELL.episode_ttis  # one batch of 2 envs: row k is (t, env) =
    for k, (prompt, completion) in enumerate(zip(prompts, completions, strict=True)):
        t = k // 2  # (k // 2, k % 2)
        history = re.findall(r"^TTI (\d+): DCM ([\d ]+) outcome", prompt, flags=re.M)
        if t == 0:
            assert history == []
            continue
        assert history == [(str(t - 1), completions[k - 2])]
        n_ues = int(re.search(r"and (\d+) UEs", prompt).group(1))
        assert int(completion.split()[0]) == int(completions[k - 2].split()[-1]) % n_ues + 1


def test_same_seed_same_data_other_seed_other_data():
    first = expert_dataset(SCENARIO, episodes=2, n_envs=2, seed=7)
    again = expert_dataset(SCENARIO, episodes=2, n_envs=2, seed=7)
    other = expert_dataset(SCENARIO, episodes=2, n_envs=2, seed=8)
    for role in ("leader", "follower"):
        assert first[role].to_dict() == again[role].to_dict()
        assert list(first[role]["prompt"]) != list(other[role]["prompt"])


def test_prompts_go_through_render():
    data = expert_dataset(SCENARIO, episodes=1, n_envs=1,
                          render=lambda system, user: f"<sys>{system}</sys>{user}")
    for ds in data.values():
        assert all(p.startswith("<sys>") and "</sys>" in p for p in list(ds["prompt"]))


@pytest.mark.parametrize("kwargs, message", [
    ({"leader": "random"}, "leader = 'random' is invalid"),
    ({"episodes": 0}, "episodes = 0 is invalid"),
    ({"n_envs": True}, "n_envs = True is invalid")])
def test_bad_arguments_raise_naming_the_argument(kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        expert_dataset(SCENARIO, **kwargs)


# ------------------------------------------------------------------------------------ SFT
CHAT_TEMPLATE = ("{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}\n"
                 "{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}")


@pytest.mark.parametrize("chat", [False, True], ids=["plain", "chat-template"])
def test_sft_trains_on_the_rollouts_prompt_ids_then_action_tokens_and_eos(tiny, tmp_path, chat):
    model, tokenizer = two_adapter_model(tiny), copy.deepcopy(tiny[1])
    tokenizer.chat_template = CHAT_TEMPLATE if chat else None
    data = expert_dataset(SCENARIO, episodes=1, n_envs=2, render=chat_render(tokenizer))
    for role, ds in data.items():
        assert ds[0]["prompt"].endswith("<|assistant|>\n") == chat
        trainer = SFTTrainer(model=model, args=sft_config(tmp_path), train_dataset=ds,
                             processing_class=tokenizer)
        for k in (0, len(ds) - 1):
            row = trainer.train_dataset[k]
            prompt_ids = encode_prompts(tokenizer, [ds[k]["prompt"]])[0][0].tolist()
            action_ids = tokenizer(ds[k]["completion"], add_special_tokens=False)["input_ids"]
            assert row["input_ids"] == prompt_ids + action_ids + [tokenizer.eos_token_id], role
            assert row["labels"] == [-100] * len(prompt_ids) + action_ids + [
                tokenizer.eos_token_id], role


@pytest.fixture(scope="module")
def seeded(tiny, tmp_path_factory):
    """The leader adapter after 2 SFT epochs on 32 expert rows (the follower adapter active)."""
    model, tokenizer = two_adapter_model(tiny), tiny[1]
    rows = expert_dataset(SCENARIO, episodes=8, n_envs=8, seed=1)["leader"].select(range(32))
    model.eval()
    before = {name: adapter_params(model, name) for name in ("leader", "follower")}
    model.set_adapter("leader")
    logp_before = completion_log_prob(model, tokenizer, rows[:16])
    model.set_adapter("follower")
    requires_grad = {k: p.requires_grad for k, p in model.named_parameters()}
    torch.manual_seed(11)
    torch_state, numpy_state, python_state = (torch.get_rng_state(), np.random.get_state(),
                                              random.getstate())
    metrics = seed_adapter(model, tokenizer, rows, adapter_name="leader",
                           output_dir=tmp_path_factory.mktemp("sft"), epochs=2.0,
                           learning_rate=1e-2, batch_size=8, logging_steps=1)
    rngs_kept = (torch.equal(torch.get_rng_state(), torch_state)
                 and np.random.get_state()[1].tolist() == numpy_state[1].tolist()
                 and random.getstate() == python_state)
    state = {"active": model.active_adapter, "training": model.training,
             "requires_grad_kept": requires_grad == {
                 k: p.requires_grad for k, p in model.named_parameters()},
             "rngs_kept": rngs_kept}
    after = {name: adapter_params(model, name) for name in ("leader", "follower")}
    model.set_adapter("leader")
    logp_after = completion_log_prob(model, tokenizer, rows[:16])
    return {"metrics": metrics, "before": before, "after": after, "state": state,
            "logp": (logp_before, logp_after)}


def test_seeding_one_adapter_leaves_the_other_bit_identical(seeded):
    before, after = seeded["before"]["follower"], seeded["after"]["follower"]
    assert before and before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_seeding_changes_the_named_adapter(seeded):
    before, after = seeded["before"]["leader"], seeded["after"]["leader"]
    assert before and any(not torch.equal(before[k], after[k]) for k in before)


def test_sft_loss_decreases(seeded):
    losses = seeded["metrics"]["loss_history"]
    assert len(losses) == 8  # 2 epochs x 32 rows / batch 8, one log per step
    # the tiny model's random lm_head (logits within about +-1.3) bounds the loss near 5
    assert np.mean(losses[-3:]) < losses[0] - 0.4
    assert math.isfinite(seeded["metrics"]["train_loss"])


def test_seeded_leader_gives_expert_completions_higher_log_prob(seeded):
    logp_before, logp_after = seeded["logp"]
    assert logp_after > logp_before + 10.0


def test_seeding_restores_active_adapter_flags_mode_and_global_rngs(seeded):
    assert seeded["state"] == {"active": "follower", "training": False,
                               "requires_grad_kept": True, "rngs_kept": True}


def test_seeding_an_unknown_adapter_raises(tiny, tmp_path):
    with pytest.raises(ValueError, match="adapter_name = 'critic' is invalid"):
        seed_adapter(two_adapter_model(tiny), tiny[1], None, adapter_name="critic",
                     output_dir=tmp_path)


def test_seed_policy_seeds_both_adapters_from_the_config(tiny, tmp_path):
    model, tokenizer = two_adapter_model(tiny), tiny[1]
    config = StackelbergPPOConfig(
        scenario={"cell": {"ue_counts": [2], "episode_ttis": 2}}, n_envs=2, episodes_per_epoch=2,
        expert_episodes=4, expert_learning_rate=1e-3, seed=5, expert_follower_sft_epochs=0.5)
    before = {name: adapter_params(model, name) for name in ("leader", "follower")}
    metrics = seed_policy(model, tokenizer, config, tmp_path)
    assert set(metrics) == {"leader", "follower"}
    # 8 leader rows (4 episodes x 2 TTIs): 1 step of 8; 16 follower rows, half an epoch: 1 step
    assert metrics["leader"]["epoch"] == 1.0 and metrics["follower"]["epoch"] == 0.5
    assert all(math.isfinite(m["train_loss"]) for m in metrics.values())
    for name in ("leader", "follower"):
        after = adapter_params(model, name)
        assert any(not torch.equal(before[name][k], after[k]) for k in after), name


@pytest.mark.parametrize("top_layers", [None, [1]])
def test_the_labelled_position_loss_equals_trls_loss_and_gradients(tiny, tmp_path, top_layers):
    """The seeding trainer's loss (LM head on labelled positions only) is TRL's own, with the
    same gradients, for adapters on every layer and on the top layer only."""
    from trainers.stackelberg.seeding import _labelled_loss_trainer

    base = copy.deepcopy(tiny[0])
    config = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, task_type="CAUSAL_LM",
                        target_modules=["q_proj", "v_proj"], layers_to_transform=top_layers)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = get_peft_model(base, config)
        for name, p in model.named_parameters():
            if "lora_B" in name:
                torch.nn.init.normal_(p, 0.0, 0.2)
    rows = expert_dataset(SCENARIO, episodes=2, n_envs=2, seed=1)["leader"].select(range(6))
    args = sft_config(tmp_path, per_device_train_batch_size=6)
    out = {}
    for kind in (SFTTrainer, _labelled_loss_trainer()):
        trainer = kind(model=model, args=args, train_dataset=rows, processing_class=tiny[1])
        batch = next(iter(trainer.get_train_dataloader()))
        model.zero_grad(set_to_none=True)
        loss = trainer.compute_loss(model, dict(batch))
        loss.backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        accuracy = trainer._metrics["train"]["mean_token_accuracy"][-1]
        out[kind] = float(loss.detach()), grads, accuracy
    (loss, grads, accuracy), (loss_l, grads_l, accuracy_l) = out.values()
    assert loss_l == pytest.approx(loss, abs=1e-5) and accuracy_l == accuracy
    assert grads.keys() == grads_l.keys() and grads
    if top_layers:
        assert all(".layers.1." in name for name in grads)
    for name, grad in grads.items():
        scale = grad.abs().max().clamp(min=1e-12)
        assert (grads_l[name] - grad).abs().max() / scale < 1e-4, name
