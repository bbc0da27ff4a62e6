"""StackelbergPPOTrainer (design §6): first PPO ratios, role isolation, exact resume after a kill,
data parallelism, learning on the tiny model, logs and checkpoints, and the Hub push.

Everything runs offline on the CPU with the tiny model of
:mod:`trainers.policy.named_models` on a small cell
(I in {2, 3}, N = 2). Hyperparameters come from ``recipes/configs/tiny_cpu.yaml``; the recipe
itself runs as a subprocess (and under ``accelerate launch`` with two gloo processes).
"""

from __future__ import annotations

import collections
import csv
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import time
from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest
import test_hub  # tests/ is on sys.path under pytest (rootdir-relative "prepend" imports)
import torch
import yaml
from huggingface_hub import constants as hf_constants
from safetensors.torch import load_file
from transformers import AutoTokenizer
from trl import ModelConfig

from grammars import ROLES
from textgame.config import ConfigError
from textgame.metrics import summarize
from textgame.policies import make_follower, make_leader
from textgame.runner import run_episodes
from textgame.tables import cell
from trainers.pag.sampler import replay_masks
from trainers.policy.encoding import left_pad
from trainers.policy.models import StackelbergPolicy
from trainers.ppo import token_logprobs
from trainers.runs.hub import MODEL_CARD, PLAY_CONFIG, TRAINER_CONFIG, policy_files
from trainers.runs.run_dir import finite
from trainers.stackelberg.config import StackelbergPPOConfig
from trainers.stackelberg.trainer import StackelbergPPOTrainer
from trainers.stackelberg.update import _right_pad, minibatch_losses, ppo_update

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "ppo_llama1b.py"
TINY_CPU = yaml.safe_load((ROOT / "recipes" / "configs" / "tiny_cpu.yaml").read_text())
MODEL_FIELDS = {f.name for f in fields(ModelConfig)}
SMALL_CELL = {"cell": {"ue_counts": [2, 3], "n_rbgs": 2, "episode_ttis": 6}}
# A short run: tiny_cpu.yaml's hyperparameters on a smaller cell and fewer, smaller epochs.
SHORT = {"scenario": SMALL_CELL, "n_envs": 4, "episodes_per_epoch": 4, "total_epochs": 4,
         "eval_every": 0, "eval_episodes": 4, "value_head_hidden": 32}
# Subprocesses on one thread: runs on a fixed thread count are bit-reproducible on the CPU.
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
       "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}


pytestmark = pytest.mark.usefixtures("one_thread")


def run_config(tiny_path: str, output_dir: Path, **overrides) -> dict:
    """tiny_cpu.yaml with the cached tiny model, SHORT and ``overrides``: one flat YAML mapping."""
    return {**TINY_CPU, "model_name_or_path": tiny_path, **SHORT, "output_dir": str(output_dir),
            **overrides}


def make_trainer(config: dict) -> StackelbergPPOTrainer:
    model_args = ModelConfig(**{k: v for k, v in config.items() if k in MODEL_FIELDS})
    args = StackelbergPPOConfig(**{k: v for k, v in config.items() if k not in MODEL_FIELDS})
    tokenizer = AutoTokenizer.from_pretrained(model_args.model_name_or_path)
    policy = StackelbergPolicy.from_model_config(model_args, args)
    return StackelbergPPOTrainer(policy, tokenizer, args,
                                 base_model_name=model_args.model_name_or_path)


def perturb_adapters(policy: StackelbergPolicy, seed: int = 0, scale: float = 0.5) -> None:
    """LoRA B != 0 in both adapters, so each role's policy differs from the base."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in policy.peft_model.named_parameters():
            if "lora_B" in name:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * scale)


def snapshot(policy: StackelbergPolicy) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in policy.named_parameters()}


def role_names(policy: StackelbergPolicy, role: str) -> set[str]:
    ids = {id(p) for p in policy.role_parameters(role)}
    return {name for name, p in policy.named_parameters() if id(p) in ids}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_yaml(path: Path, config: dict) -> Path:
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def start_recipe(config_file: Path, log: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(RECIPE), "--config", str(config_file)],
                            cwd=ROOT, env=ENV, stdout=log.open("w"), stderr=subprocess.STDOUT)


def run_recipe(config_file: Path, log: Path, timeout: float = 120) -> None:
    process = start_recipe(config_file, log)
    assert process.wait(timeout) == 0, log.read_text()[-3000:]


# ------------------------------------------------------------------------ first PPO pass
def test_first_ppo_pass_has_ratio_one_for_both_roles(tiny_path, tmp_path):
    config = run_config(tiny_path, tmp_path, pag_backend="llguidance", temperature_start=0.7)
    trainer = make_trainer(config)
    policy, args = trainer.policy, trainer.args
    perturb_adapters(policy)
    assert all(p.dtype == torch.float32 for p in policy.parameters())
    leader, follower, _ = trainer.worker.collect(0)
    policy.eval()
    for role, d in (("leader", leader), ("follower", follower)):
        assert d.temperature == 0.7 and len(d) > 0
        rows = np.arange(len(d))
        with torch.no_grad():
            out = minibatch_losses(policy, role, d, rows, args, trainer.eos, trainer.pad)
            ids, mask = left_pad(d.prompts, trainer.pad, policy.device)
            tokens, lengths = _right_pad(d.tokens, trainer.eos, policy.device)
            masks = replay_masks(d.grammars, tokens, lengths)
            valid = torch.arange(tokens.shape[1])[None, :] < lengths[:, None]
            logits, _ = policy.forward_actions(role, ids, mask, tokens, lengths)
            new = (token_logprobs(logits, masks, tokens, d.temperature) * valid).sum(-1)
        ratio = (new - torch.tensor(d.logprobs)).exp()  # (n,) eq. 12 action ratios
        assert (ratio - 1).abs().max() < 1e-5, role
        assert abs(float(out["ratio_max"]) - 1) < 1e-5, role
        assert abs(float(out["ratio_mean"]) - 1) < 1e-5, role
        assert float(out["clipfrac"]) == 0.0, role
        # the adapters really moved the policy off the base (so the check is not trivial)
        assert float(out["kl_loss"]) > 1e-3, role


def test_kl_reference_start_is_the_frozen_starting_policy(tiny_path, tmp_path):
    """kl_reference: start — KL 0 on the first pass, the reference stays put while the role
    trains, and a checkpoint carries it."""
    saved = make_trainer(run_config(tiny_path, tmp_path / "seeded"))
    perturb_adapters(saved.policy, seed=7)
    folder = saved.save_model(tmp_path / "seeded" / "final")
    config = run_config(tiny_path, tmp_path / "run", init_adapters=str(folder),
                        kl_reference="start", save_every=1)
    trainer = make_trainer(config)
    trainer._start()
    policy, args = trainer.policy, trainer.args
    leader, follower, _ = trainer.worker.collect(0)
    policy.eval()
    with torch.no_grad():
        for role, d in (("leader", leader), ("follower", follower)):
            out = minibatch_losses(policy, role, d, np.arange(len(d)), args, trainer.eos,
                                   trainer.pad)
            assert float(out["kl_loss"]) == 0.0, role  # the reference is this very policy
    reference = {n: p.detach().clone() for n, p in policy.named_parameters() if "_ref." in n}
    assert reference and not any(p.requires_grad for n, p in policy.named_parameters()
                                 if "_ref." in n)
    before = snapshot(policy)
    ppo_update(policy, "leader", leader, trainer.optimizers["leader"], args, trainer.accelerator,
               trainer.rng, trainer.eos, trainer.pad)
    after = snapshot(policy)
    assert all(torch.equal(after[n], t) for n, t in reference.items())
    assert any(not torch.equal(before[n], after[n]) for n in role_names(policy, "leader"))
    with torch.no_grad():
        out = minibatch_losses(policy, "leader", leader, np.arange(len(leader)), args,
                               trainer.eos, trainer.pad)
    assert float(out["kl_loss"]) > 0.0
    trainer.epoch = 1
    checkpoint = trainer.save_checkpoint()
    resumed = make_trainer({**config, "resume_from_checkpoint": str(checkpoint)})
    resumed._start()
    again = snapshot(resumed.policy)
    assert all(torch.equal(again[n], t) for n, t in reference.items())
    assert all(torch.equal(again[n], after[n]) for n in role_names(policy, "leader"))


# -------------------------------------------------------------------------- role isolation
def update_one_role(tiny_path, output_dir, role) -> tuple[StackelbergPolicy, dict, dict]:
    """(policy, parameters before, after) one ppo_update of ``role`` on an epoch's decisions."""
    trainer = make_trainer(run_config(tiny_path, output_dir))
    policy = trainer.policy
    perturb_adapters(policy)
    decisions = dict(zip(ROLES, trainer.worker.collect(0)[:2], strict=True))
    before = snapshot(policy)
    ppo_update(policy, role, decisions[role], trainer.optimizers[role], trainer.args,
               trainer.accelerator, trainer.rng, trainer.eos, trainer.pad)
    return policy, before, snapshot(policy)


def assert_only_role_changed(policy, before, after, role):
    own = role_names(policy, role)
    other = role_names(policy, next(r for r in ROLES if r != role))
    base = set(before) - own - other
    assert base and other and own
    assert any(name.startswith(f"value_heads.{role}.") for name in own)
    for name in sorted(base | other):
        assert torch.equal(before[name], after[name]), name  # bit-identical
    changed = {name for name in own if not torch.equal(before[name], after[name])}
    assert any("lora_" in name for name in changed)
    assert any(name.startswith(f"value_heads.{role}.") for name in changed)


def test_leader_update_changes_only_the_leader(tiny_path, tmp_path):
    assert_only_role_changed(*update_one_role(tiny_path, tmp_path, "leader"), "leader")


def test_follower_update_changes_only_the_followers(tiny_path, tmp_path):
    assert_only_role_changed(*update_one_role(tiny_path, tmp_path, "follower"), "follower")


# ---------------------------------------------------------------------------- exact resume
def adapter_config(path: Path) -> dict:
    config = json.loads(path.read_text())
    return {**config, "target_modules": sorted(config["target_modules"])}


def checkpoints(output_dir: Path) -> list[str]:
    return sorted((p.name for p in output_dir.glob("checkpoint-*")),
                  key=lambda name: int(name.split("-")[1]))


def test_kill_and_resume_matches_an_uninterrupted_run(tiny_path, tmp_path):
    """Two runs of one config at two threads (the reference machine's default) with the
    default kernels (``deterministic: false``), one of them killed with SIGKILL and resumed,
    give the same bytes: every metric and every adapter. (Before the shared meta-prompts were
    gathered with ``index_select``, design §6.11, this needed ``deterministic: true``.)"""
    a, b = tmp_path / "a", tmp_path / "b"
    config = run_config(tiny_path, a, total_epochs=4, save_every=1, save_total_limit=2,
                        num_threads=2)
    run_recipe(write_yaml(tmp_path / "a.yaml", config), tmp_path / "a.log")
    config_b = write_yaml(tmp_path / "b.yaml", {**config, "output_dir": str(b)})

    process = start_recipe(config_b, tmp_path / "b-killed.log")
    deadline = time.monotonic() + 120
    while not (b / "checkpoint-2").is_dir():
        assert process.poll() is None, (tmp_path / "b-killed.log").read_text()[-3000:]
        assert time.monotonic() < deadline, "checkpoint-2 never appeared"
        time.sleep(0.01)
    os.kill(process.pid, signal.SIGKILL)
    process.wait(30)
    assert process.returncode == -signal.SIGKILL
    assert not (b / "final").exists() and "checkpoint-4" not in checkpoints(b)  # interrupted
    resume_at = max(int(name.split("-")[1]) for name in checkpoints(b))
    # A half-written checkpoint further on must never be resumed from.
    half = b / ".tmp-checkpoint-3"
    half.mkdir(exist_ok=True)
    (half / "trainer_state.json").write_bytes(b"half-written")

    resume_b = write_yaml(tmp_path / "b-resume.yaml", {**config, "output_dir": str(b),
                                                       "resume_from_checkpoint": True})
    run_recipe(resume_b, tmp_path / "b-resumed.log")
    progress = (tmp_path / "b-resumed.log").read_text()  # tqdm starts at the resumed epoch
    assert f"| {resume_at}/4 [" in progress and "| 0/4 [" not in progress
    assert f"resuming from checkpoint-{resume_at} " in progress
    lines_a = (a / "metrics.jsonl").read_text().splitlines()
    lines_b = (b / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["epoch"] for x in lines_a] == [1, 2, 3, 4]
    assert lines_b == lines_a  # every value, as written
    assert (b / "metrics.csv").read_text() == (a / "metrics.csv").read_text()
    for name in policy_files():
        if name.endswith("adapter_config.json"):  # PEFT writes target_modules, a set, in
            assert adapter_config(b / "final" / name) == adapter_config(a / "final" / name)
            continue  # hash order (PYTHONHASHSEED): compare as JSON, not bytes
        assert (b / "final" / name).read_bytes() == (a / "final" / name).read_bytes(), name
    assert checkpoints(b) == checkpoints(a) == ["checkpoint-3", "checkpoint-4"]


def test_refuses_an_output_dir_holding_a_run(tiny_path, tmp_path):
    (tmp_path / "metrics.jsonl").write_text('{"epoch": 1}\n')  # a previous run's
    trainer = make_trainer(run_config(tiny_path, tmp_path))
    with pytest.raises(ConfigError, match=r"StackelbergPPOConfig\.output_dir = .* set "
                                          r"resume_from_checkpoint .* or overwrite_output_dir"):
        trainer.train()
    assert trainer.epoch == 0 and not trainer.checkpoints()


def test_init_adapters_starts_from_a_saved_policy(tiny_path, tmp_path):
    saved = make_trainer(run_config(tiny_path, tmp_path / "seeded"))
    perturb_adapters(saved.policy, seed=3)
    with torch.no_grad():  # lora_A and the heads too: every trainable tensor differs from fresh
        for parameter in saved.policy.parameters():
            if parameter.requires_grad:
                parameter.add_(0.25)
    folder = saved.save_model(tmp_path / "seeded" / "final")
    fresh = make_trainer(run_config(tiny_path, tmp_path / "fresh"))
    started = make_trainer(run_config(tiny_path, tmp_path / "started", init_adapters=str(folder)))
    started._start()
    want, got, before = (snapshot(t.policy) for t in (saved, started, fresh))
    trainable = {n for n, p in started.policy.named_parameters() if p.requires_grad}
    assert trainable and all(torch.equal(got[n], want[n]) for n in got)
    assert all(not torch.equal(got[n], before[n]) for n in trainable)


def test_zero_epochs_evaluates_and_saves_the_starting_policy(tiny_path, tmp_path, capsys):
    """``train --total_epochs 0 --init_adapters DIR``: the zero-shot / seeded row of a table."""
    from trainers.cli.train import main

    saved = make_trainer(run_config(tiny_path, tmp_path / "seeded"))
    perturb_adapters(saved.policy, seed=5)
    folder = saved.save_model(tmp_path / "seeded" / "final")
    config = run_config(tiny_path, tmp_path / "zero", total_epochs=0, init_adapters=str(folder),
                        eval_episodes=4)
    assert main(["--config", str(write_yaml(tmp_path / "zero.yaml", config))]) == 0
    out = capsys.readouterr().out
    assert "no PPO epochs (total_epochs = 0)" in out and "LLM (Stackelberg PPO)" in out
    assert re.search(r"^wall time \d+ s \(final evaluation \d+ s\), ", out, re.M)
    assert all(f"| {name} |" in out for name in ("S-ALOHA", "Round Robin", "Max-Weight"))
    episodes = list(csv.DictReader((tmp_path / "zero" / "episodes.csv").open()))
    counts = collections.Counter(r["policy"] for r in episodes)  # the table's episodes
    assert counts == {name: 4 for name in ("LLM (Stackelberg PPO)", "S-ALOHA", "Round Robin",
                                           "Max-Weight")}
    for name in counts:  # each table row is the mean of its episodes (printed as cell())
        values = [float(r["throughput_mbps"]) for r in episodes if r["policy"] == name]
        assert f"| {name} | {cell(float(np.mean(values)))} |" in out
    for role in ROLES:
        name = f"{role}/adapter_model.safetensors"
        want, got = load_file(folder / name), load_file(tmp_path / "zero" / "final" / name)
        assert want.keys() == got.keys()
        assert all(torch.equal(want[k], got[k]) for k in want)


def test_the_report_splits_the_wall_time_into_its_phases(tiny_path, tmp_path, capsys):
    """Seeding, critic warm-up, PPO epochs (split into rollouts and each role's updates) and
    the final evaluation, each timed once, in the order they ran; together at most the whole
    wall time, and the epochs' parts at most the epochs."""
    from trainers.cli.train import main

    config = run_config(tiny_path, tmp_path / "run", expert_seeding=True, expert_episodes=4,
                        expert_agreement_episodes=0, critic_warmup_episodes=8, total_epochs=1,
                        save_every=0)
    assert main(["--config", str(write_yaml(tmp_path / "run.yaml", config))]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("wall time"))
    match = re.fullmatch(r"wall time (\d+) s \(expert seeding (\d+) s, critic warm-up (\d+) s, "
                         r"PPO epochs (\d+) s \[rollouts (\d+) s, leader updates (\d+) s, "
                         r"follower updates (\d+) s\], final evaluation (\d+) s\), .*", line)
    assert match, line
    total, seeding, warmup, epochs, *parts, final = (int(x) for x in match.groups())
    assert seeding + warmup + epochs + final <= total + 4  # each rounded to the second
    assert sum(parts) <= epochs + len(parts)


def test_last_checkpoint_ignores_half_written_checkpoints(tiny_path, tmp_path):
    trainer = make_trainer(run_config(tiny_path, tmp_path))
    assert trainer.last_checkpoint() is None
    trainer.epoch = 2
    trainer.save_checkpoint()
    (tmp_path / ".tmp-checkpoint-3").mkdir()
    (tmp_path / ".tmp-checkpoint-10").mkdir()
    assert trainer.last_checkpoint() == tmp_path / "checkpoint-2"


# -------------------------------------------------------------------------- data parallel
DATA_PARALLEL_SCRIPT = """\
import sys
from pathlib import Path

import torch
import yaml
from transformers import AutoTokenizer
from trl import ModelConfig

from grammars import ROLES
from trainers.stackelberg.config import StackelbergPPOConfig
from trainers.policy.models import StackelbergPolicy
from trainers.stackelberg.trainer import StackelbergPPOTrainer

config = yaml.safe_load(Path(sys.argv[1]).read_text())
model_fields = set(ModelConfig.__dataclass_fields__)
model_args = ModelConfig(**{k: v for k, v in config.items() if k in model_fields})
args = StackelbergPPOConfig(**{k: v for k, v in config.items() if k not in model_fields})
policy = StackelbergPolicy.from_model_config(model_args, args)
trainer = StackelbergPPOTrainer(
    policy, AutoTokenizer.from_pretrained(model_args.model_name_or_path), args)
names = {id(p): n for n, p in policy.named_parameters()}


def role_state():
    return {role: {names[id(p)]: p.detach().clone() for p in policy.role_parameters(role)}
            for role in ROLES}


initial = role_state()
history = trainer.train()
rank = trainer.accelerator.process_index
torch.save({"initial": initial, "final": role_state(), "seeds": trainer.worker.seeds(0, 0),
            "num_processes": trainer.accelerator.num_processes, "history": history},
           Path(args.output_dir) / f"rank{rank}.pt")
"""


def test_two_process_data_parallel_keeps_adapters_identical(tiny_path, tmp_path):
    script = tmp_path / "data_parallel.py"
    script.write_text(DATA_PARALLEL_SCRIPT)
    config = write_yaml(tmp_path / "dp.yaml", run_config(tiny_path, tmp_path / "dp",
                                                         total_epochs=2, save_every=0))
    # `accelerate launch --cpu --num_processes 2` starts ONE process (accelerate 1.x launches
    # several CPU processes only through mpirun). torchrun's launcher (--multi_gpu) starts two,
    # and ACCELERATE_USE_CPU makes each one's Accelerator join a gloo group on the CPU.
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu",
               "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
               "--dynamo_backend", "no", "--main_process_port", str(free_port()), str(script),
               str(config)]
    result = subprocess.run(command, cwd=ROOT, env={**ENV, "ACCELERATE_USE_CPU": "true"},
                            capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    ranks = [torch.load(tmp_path / "dp" / f"rank{i}.pt", weights_only=True) for i in range(2)]
    assert [r["num_processes"] for r in ranks] == [2, 2]
    assert ranks[0]["seeds"] != ranks[1]["seeds"]  # each process plays its own episodes
    for first, second in zip(ranks[0]["history"], ranks[1]["history"], strict=True):
        kpis = [k for k in first if "/" not in k]  # role diagnostics are each process's own
        assert "leader_utility" in kpis
        assert {k: first[k] for k in kpis} == {k: second[k] for k in kpis}  # averaged over both
    for role in ROLES:
        first, second = ranks[0]["final"][role], ranks[1]["final"][role]
        assert first.keys() == second.keys() == ranks[0]["initial"][role].keys()
        for name in first:
            assert torch.equal(first[name], second[name]), name
            assert torch.equal(ranks[0]["initial"][role][name], ranks[1]["initial"][role][name])
        assert any(not torch.equal(first[name], ranks[0]["initial"][role][name])
                   for name in first), role


# -------------------------------------------------------------------- logs and checkpoints
KPIS = ("throughput_mbps", "fairness", "leader_utility", "follower_utility",
        "invalid_action_rate")
DIAGNOSTICS = ("approx_kl", "clipfrac", "explained_variance", "entropy_loss", "kl_loss",
               "grad_norm")


def test_metrics_files_and_checkpoint_layout(tiny_path, tmp_path):
    trainer = make_trainer(run_config(tiny_path, tmp_path, total_epochs=2, save_every=1,
                                      save_total_limit=1))
    history = trainer.train()
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text()
               .splitlines()]
    assert [r["epoch"] for r in records] == [1, 2]
    assert records == json.loads(json.dumps(history))
    for record in records:
        expected = {"epoch", "temperature", *KPIS,
                    *(f"{role}/{k}" for role in ROLES for k in DIAGNOSTICS)}
        assert expected <= record.keys()
    assert [r["temperature"] for r in records] == pytest.approx([1.0, 0.3])  # start, end
    with (tmp_path / "metrics.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2
    for row, record in zip(rows, records, strict=True):
        assert row.keys() == record.keys()
        assert all(float(row[k]) == pytest.approx(v, nan_ok=True) for k, v in record.items())
    assert checkpoints(tmp_path) == ["checkpoint-2"]  # save_total_limit = 1 pruned epoch 1
    checkpoint = tmp_path / "checkpoint-2"
    for name in (*policy_files(), "trainer_state.json", "optimizer.pt", "rng_state_0.json",
                 "checkpoint.json"):
        assert (checkpoint / name).is_file(), name
    assert not list(tmp_path.glob(".tmp-*"))
    state = json.loads((checkpoint / "trainer_state.json").read_text())  # readable, no NaN
    assert state["epoch"] == 2 and state["history"] == [finite(r) for r in history]
    assert set(state["schedulers"]) == set(ROLES)
    assert set(torch.load(checkpoint / "optimizer.pt", weights_only=True)["optimizers"]) == set(
        ROLES)
    assert (tmp_path / "learning_curve.png").read_bytes()[:4] == b"\x89PNG"
    heads = load_file(checkpoint / "value_heads.safetensors")
    assert all(torch.equal(heads[k], v.cpu())
               for k, v in trainer.policy.value_heads.state_dict().items())


# ---------------------------------------------------------------------------------- Hub
hub = test_hub.hub  # the fixture: a fake Hub at the HTTP boundary that records every request


def test_trainer_push_to_hub_sends_the_adapters(hub, tiny_path, tmp_path, monkeypatch, capsys,
                                                caplog):
    caplog.set_level(logging.DEBUG)
    config = run_config(tiny_path, tmp_path, push_to_hub=True, hub_model_id=test_hub.REPO_ID)
    trainer = make_trainer(config)
    perturb_adapters(trainer.policy)
    monkeypatch.setattr(hf_constants, "ENDPOINT", test_hub.ENDPOINT)  # HfApi's default endpoint
    url = trainer.push_to_hub(kpis={"LLM": {"leader_utility": 0.5}}, token=test_hub.TOKEN)
    assert url == f"{test_hub.ENDPOINT}/{test_hub.REPO_ID}/commit/{test_hub.SHA}"
    assert sorted(hub.files) == sorted([*policy_files(), MODEL_CARD, TRAINER_CONFIG, PLAY_CONFIG])
    trained = json.loads(hub.files[TRAINER_CONFIG])  # evaluation replays the text layer from it
    assert trained["hub_model_id"] == test_hub.REPO_ID and trained["n_envs"] == config["n_envs"]
    final = tmp_path / "final"
    for name in policy_files():
        assert hub.files[name] == (final / name).read_bytes(), name
    uploaded = load_file(final / "leader" / "adapter_model.safetensors")
    assert any("lora_B" in k and v.abs().sum() > 0 for k, v in uploaded.items())
    card = hub.files[MODEL_CARD].decode()
    assert test_hub.front_matter(card)["base_model"] == tiny_path
    assert "| LLM | 0.5 |" in card
    token = test_hub.TOKEN
    assert all(token.encode() not in data for data in hub.files.values())
    assert all(token.encode() not in p.read_bytes() for p in tmp_path.rglob("*") if p.is_file())
    out, err = capsys.readouterr()
    assert token not in out + err
    assert all(token not in r.getMessage() for r in caplog.records)


# -------------------------------------------------------------------------------- learning
LEARNING_SEED = 0
LEARNING_EPOCHS = 80
EVAL_EPISODES = 64
MARGIN = 0.03  # see the docstring


def test_tiny_model_learns_above_untrained_and_random(tiny_path, tmp_path):
    """tiny_cpu.yaml's hyperparameters on its cell (I in {2, 3}, N = 2) with 5-TTI episodes.

    The trained leader's utility over 64 fresh episodes at the final temperature must beat both
    the untrained policy (the same episodes: same seeds) and random leader + random followers
    (textgame's numeric policies) by MARGIN; so must the followers'. Measured gaps to
    max(untrained, random) after 60 epochs (95% CI half-width of each mean 0.025-0.035), at
    first with the code of its time, then with today's sampler and update at two threads, in
    tiny_cpu.yaml's prompt format 1 and in format 2 (the UE named in the observation):

    ========  =====================  =====================  ==================  ==============
    seed      leader, 1 / 2 threads  followers, 1 / 2 thr.  today, format 1     today, format 2
    ========  =====================  =====================  ==================  ==============
    0         0.099 / 0.125          0.29 / 0.30            0.108 / 0.26        0.124 / 0.30
    1         0.138 / 0.126          0.30 / 0.30            0.133 / 0.30        -0.055 / 0.14
    2         0.113 / 0.054          0.31 / 0.28            0.066 / 0.28        -0.081 / 0.22
    ========  =====================  =====================  ==================  ==============

    (today's columns: leader / followers.) The toy's followers learn to obey more slowly in
    format 2, and its leader learns only once they obey, so tiny_cpu.yaml plays format 1.

    Since the update's shared meta-prompts are gathered in order (design §6.11) the run is the
    same bytes every time at two threads, and 60 epochs were no longer enough for seed 0: its
    leader gap was 0.022 (followers 0.21; seeds 1-4: 0.093, 0.048, 0.089, 0.110, the figures of
    ``deterministic: true``, which this path now equals). After 80 epochs, seeds 0 / 2 / 1:
    leader 0.126 / 0.124 / 0.164, followers 0.32 / 0.32 / 0.31 (seeds 3 and 4 not rerun).

    MARGIN = 0.03 sits well below the smallest gap: another CPU's rounding changes the run as
    another seed would (gaps after 60 epochs: mean 0.11, s.d. 0.03 with the earlier atomic
    gather). Less training is not enough for seed 0 (above; and with tiny_cpu.yaml's 10-TTI
    episodes its gap was 0.004 after 40 and 0.031 after 60 epochs: the leader learns late, once
    the followers obey its DCM).
    """
    config = {**TINY_CPU, "model_name_or_path": tiny_path, "output_dir": str(tmp_path),
              "scenario": {"cell": {**TINY_CPU["scenario"]["cell"], "episode_ttis": 5}},
              "seed": LEARNING_SEED, "total_epochs": LEARNING_EPOCHS, "save_every": 0}
    torch.set_num_threads(2)  # the two cores of the reference machine; fixed, so reproducible
    try:
        trainer = make_trainer(config)
        untrained = trainer.evaluate(EVAL_EPISODES)
        trainer.train()
        trained = trainer.evaluate(EVAL_EPISODES)
    finally:
        torch.set_num_threads(1)
    scenario = trainer.args.scenario_config()
    random = summarize([run_episodes(scenario, make_leader("random", scenario.cell),
                                     make_follower("random"), EVAL_EPISODES,
                                     n_envs=EVAL_EPISODES, seed=LEARNING_SEED)])
    for role in ROLES:
        key = f"{role}_utility"
        best_other = max(untrained[key], random[key].mean)
        assert trained[key] > best_other + MARGIN, (key, trained[key], untrained[key],
                                                    random[key].mean)
