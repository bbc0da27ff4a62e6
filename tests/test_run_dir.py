"""The run directory (design §6, trainers/runs/run_dir.py): explicit resume, an output_dir holding
a run refused, overwrite deleting only the run, checkpoints sealed by a manifest (an incomplete
one skipped with a warning), state loaded without pickle, metrics as strict JSON. The trainer
level runs the MARL trainer on test_marl's tiny networks (a second or two per run)."""

from __future__ import annotations

import ast
import json
import logging
import math
import os
import random
import re
from pathlib import Path

import numpy as np
import pytest
import test_marl  # tests/ is on sys.path under pytest (rootdir-relative "prepend" imports)
import torch

from textgame.config import ConfigError
from trainers.marl import MARLTrainer
from trainers.runs.run_dir import (
    CheckpointError,
    begin_checkpoint,
    clear_run,
    finish_checkpoint,
    latest_complete_checkpoint,
    list_checkpoints,
    load_state,
    load_trainer_state,
    resume_option,
    rng_state,
    set_rng_state,
    start_run,
    write_manifest,
    write_metrics,
)

ROOT = Path(__file__).resolve().parents[1]
LOGGER = "trainers.runs.run_dir"

pytestmark = pytest.mark.usefixtures("one_thread")


class Payload:
    """Pickles as a call of os.mkdir: unpickling it would create the directory ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.mkdir, (str(self.marker),)


def write_checkpoint(output_dir: Path, step: int, limit: int = 10) -> Path:
    tmp = begin_checkpoint(output_dir, step)
    torch.save({"step": step, "weights": torch.arange(4.0) * step}, tmp / "trainer_state.pt")
    (tmp / "leader").mkdir()
    (tmp / "leader" / "adapter.bin").write_bytes(bytes(range(64)) * step)
    return finish_checkpoint(tmp, limit)


def strict_lines(path: Path) -> list[dict]:
    def refuse(constant):
        raise ValueError(f"{constant} is not JSON")

    return [json.loads(line, parse_constant=refuse) for line in path.read_text().splitlines()]


# --------------------------------------------------------------------------- the options
@pytest.mark.parametrize("value, expected", [
    (True, True), ("true", True), ("True", True), ("latest", True), (False, None),
    ("false", None), (None, None), ("runs/a/checkpoint-4", "runs/a/checkpoint-4"),
    (Path("runs/a/checkpoint-4"), "runs/a/checkpoint-4")])
def test_resume_option_reads_true_false_and_paths(value, expected):
    assert resume_option("C", value, False) == expected


def test_resume_and_overwrite_exclude_each_other():
    with pytest.raises(ConfigError, match=r"C\.overwrite_output_dir = True is invalid; allowed: "
                                          r"False when resume_from_checkpoint is set"):
        resume_option("C", True, True)
    with pytest.raises(ConfigError, match=r"C\.resume_from_checkpoint = 3 is invalid"):
        resume_option("C", 3, False)


# ------------------------------------------------------------------------ the run policy
def test_output_dir_holding_a_run_is_refused(tmp_path):
    (tmp_path / "metrics.jsonl").write_text("{}\n")
    with pytest.raises(ConfigError, match=rf"C\.output_dir = '{tmp_path}' is invalid; allowed: "
                       r".*holds metrics\.jsonl.*set resume_from_checkpoint .* or "
                       r"overwrite_output_dir"):
        start_run("C", tmp_path, None, False)


def test_files_outside_the_run_neither_count_nor_are_deleted(tmp_path):
    (tmp_path / "tiny-model").mkdir()  # e.g. the recipe's cached named model
    (tmp_path / "notes.txt").write_text("mine")
    assert start_run("C", tmp_path, None, False) is None
    for name in ("checkpoint-1", ".tmp-checkpoint-2", "final", "expert-seeding"):
        (tmp_path / name).mkdir()
    (tmp_path / "metrics.csv").write_text("epoch\n")
    assert start_run("C", tmp_path, None, True) is None  # overwrite: allowed, deletes nothing yet
    clear_run(tmp_path, extra=("expert-seeding",))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt", "tiny-model"]


def test_resume_true_without_a_checkpoint_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match=r"C\.resume_from_checkpoint = True is invalid; "
                                          r"allowed: true only when output_dir = .* holds a "
                                          r"complete checkpoint"):
        start_run("C", tmp_path, True, False)


def test_resume_logs_the_checkpoint(tmp_path, caplog):
    write_checkpoint(tmp_path, 1)
    write_checkpoint(tmp_path, 2)
    with caplog.at_level(logging.INFO, logger=LOGGER):
        assert start_run("C", tmp_path, True, False) == tmp_path / "checkpoint-2"
    assert f"resuming from checkpoint-2 ({tmp_path / 'checkpoint-2'})" in caplog.messages


def test_resume_from_a_path_must_be_complete_and_not_behind_the_run(tmp_path):
    write_checkpoint(tmp_path, 1)
    write_checkpoint(tmp_path, 2)
    other = tmp_path / "elsewhere"
    assert start_run("C", other, str(tmp_path / "checkpoint-1"), False) == \
        tmp_path / "checkpoint-1"
    with pytest.raises(ConfigError, match=r"would overwrite its later checkpoint-2"):
        start_run("C", tmp_path, str(tmp_path / "checkpoint-1"), False)
    other.mkdir()
    (other / "metrics.jsonl").write_text("{}\n")  # another run's: its metrics would be replaced
    with pytest.raises(ConfigError, match=r"C\.output_dir = .* allowed: a directory without a "
                                          r"run when resuming from .*checkpoint-1 elsewhere"):
        start_run("C", other, str(tmp_path / "checkpoint-1"), False)
    with pytest.raises(ConfigError, match=r"C\.resume_from_checkpoint = '.*checkpoint-7' is "
                                          r"invalid; allowed: .*no such directory"):
        start_run("C", other, str(tmp_path / "checkpoint-7"), False)


# ---------------------------------------------------------------------------- checkpoints
def test_checkpoints_are_sealed_and_pruned(tmp_path):
    for step in (1, 2, 3):
        write_checkpoint(tmp_path, step, limit=2)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["checkpoint-2", "checkpoint-3"]
    manifest = json.loads((tmp_path / "checkpoint-3" / "checkpoint.json").read_text())
    assert manifest["step"] == 3
    assert sorted(manifest["files"]) == ["leader/adapter.bin", "trainer_state.pt"]
    assert manifest["files"]["leader/adapter.bin"]["bytes"] == 64 * 3
    assert not list(tmp_path.glob(".tmp-*"))


def test_pruning_keeps_what_was_just_written_below_a_skipped_later_checkpoint(tmp_path):
    (tmp_path / "checkpoint-9").mkdir()  # incomplete, from before a resume at step 1
    for step in (1, 2, 3):
        write_checkpoint(tmp_path, step, limit=2)
    assert [p.name for p in list_checkpoints(tmp_path)] == [
        "checkpoint-2", "checkpoint-3", "checkpoint-9"]


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:-7])


def _garbage(path: Path) -> None:  # same size, other bytes
    path.write_bytes(bytes(b ^ 0xFF for b in path.read_bytes()))


@pytest.mark.parametrize("damage, file, reason", [
    (_truncate, "trainer_state.pt", r"trainer_state\.pt has \d+ bytes, not \d+ \(truncated\?\)"),
    (Path.unlink, "leader/adapter.bin", r"leader/adapter\.bin is missing"),
    (_garbage, "leader/adapter.bin", r"leader/adapter\.bin does not match its SHA-256"),
    (Path.unlink, "checkpoint.json", r"no checkpoint\.json: never completed"),
    (lambda p: p.write_text("{"), "checkpoint.json", r"unreadable checkpoint\.json")])
def test_an_incomplete_checkpoint_is_skipped_with_a_warning(tmp_path, caplog, damage, file,
                                                            reason):
    write_checkpoint(tmp_path, 1)
    write_checkpoint(tmp_path, 2)
    damage(tmp_path / "checkpoint-2" / file)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        assert latest_complete_checkpoint(tmp_path) == tmp_path / "checkpoint-1"
    [warning] = caplog.messages
    assert warning.startswith(f"skipping {tmp_path / 'checkpoint-2'}: ")
    assert re.search(reason, warning), warning


def test_no_complete_checkpoint_is_a_clean_error(tmp_path, caplog):
    _truncate(write_checkpoint(tmp_path, 1) / "trainer_state.pt")
    with pytest.raises(ConfigError, match=r"resume_from_checkpoint = True is invalid"):
        start_run("C", tmp_path, True, False)
    assert any("skipping" in m and "checkpoint-1" in m for m in caplog.messages)


# ----------------------------------------------------------------------------- no pickle
def test_a_pickled_object_is_refused_not_constructed(tmp_path):
    torch.save({"epoch": 1, "payload": Payload(tmp_path / "constructed")}, tmp_path / "state.pt")
    with pytest.raises(CheckpointError, match=r"state\.pt cannot be loaded as tensors and "
                                              r"plain Python values"):
        load_state(tmp_path / "state.pt")
    assert not (tmp_path / "constructed").exists()


def test_torch_load_is_weights_only_everywhere():
    """Every torch.load call of the package, recipes, benchmarks and tests passes
    weights_only=True (a checkpoint from elsewhere must never run code)."""
    offenders = []
    for folder in ("trainers", "textgame", "recipes", "benchmarks", "tests"):
        for path in (ROOT / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                        and node.func.attr == "load" and getattr(node.func.value, "id", "")
                        == "torch"):
                    flags = {k.arg: getattr(k.value, "value", None) for k in node.keywords}
                    if flags.get("weights_only") is not True:
                        offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert offenders == []


def test_rng_state_round_trips_through_json():
    generator = np.random.default_rng([3, 1])
    state = json.loads(json.dumps(rng_state({"shuffle": generator})))
    draws = (torch.rand(3), np.random.random(3), random.random(), generator.random(3))
    torch.rand(5), np.random.random(5), random.random(), generator.random(5)  # move on
    set_rng_state(state, {"shuffle": generator})
    again = (torch.rand(3), np.random.random(3), random.random(), generator.random(3))
    assert torch.equal(draws[0], again[0]) and draws[2] == again[2]
    assert np.array_equal(draws[1], again[1]) and np.array_equal(draws[3], again[3])


# ------------------------------------------------------------------------------ metrics
def test_metrics_are_strict_json_with_null_for_nan(tmp_path):
    records = [{"update": 1, "loss": 0.5, "explained_variance": math.nan},
               {"update": 2, "loss": math.inf, "explained_variance": -math.inf}]
    write_metrics(tmp_path, records[:1], "update")
    write_metrics(tmp_path, records, "update", append=records[1])
    assert strict_lines(tmp_path / "metrics.jsonl") == [
        {"update": 1, "loss": 0.5, "explained_variance": None},
        {"update": 2, "loss": None, "explained_variance": None}]
    assert (tmp_path / "metrics.csv").read_text().splitlines() == [
        "update,explained_variance,loss", "1,,0.5", "2,,"]


# ------------------------------------------------------------------- the MARL trainer
def marl(output_dir: Path, **changes) -> MARLTrainer:
    return MARLTrainer(test_marl.tiny_config(output_dir, **{"total_updates": 2, **changes}))


def test_trainer_refuses_an_output_dir_holding_a_run(tmp_path):
    marl(tmp_path).train()
    again = marl(tmp_path)
    with pytest.raises(ConfigError, match=r"MARLConfig\.output_dir = .* set "
                                          r"resume_from_checkpoint"):
        again.train()
    assert again.update == 0


def test_trainer_overwrite_starts_fresh_metrics_and_checkpoints(tmp_path):
    marl(tmp_path, save_every=1, save_total_limit=5).train()
    marl(tmp_path, total_updates=1, overwrite_output_dir=True).train()
    assert [r["update"] for r in strict_lines(tmp_path / "metrics.jsonl")] == [1]
    assert [p.name for p in list_checkpoints(tmp_path)] == ["checkpoint-1"]


def test_trainer_resumes_the_previous_checkpoint_when_the_last_is_truncated(tmp_path, caplog):
    straight = marl(tmp_path / "a", total_updates=3)
    straight.train()
    marl(tmp_path / "b", total_updates=3, save_every=1, save_total_limit=3).train()
    _truncate(tmp_path / "b" / "checkpoint-3" / "model.safetensors")
    resumed = marl(tmp_path / "b", total_updates=3, save_every=1, save_total_limit=3,
                   resume_from_checkpoint=True)
    with caplog.at_level(logging.INFO, logger=LOGGER):
        resumed.train()
    assert any(m.startswith(f"skipping {tmp_path / 'b' / 'checkpoint-3'}: model.safetensors")
               for m in caplog.messages)
    assert any(m.startswith("resuming from checkpoint-2 ") for m in caplog.messages)
    assert latest_complete_checkpoint(tmp_path / "b") == tmp_path / "b" / "checkpoint-3"
    for name, value in straight.agents.state_dict().items():
        assert torch.equal(value, resumed.agents.state_dict()[name]), name
    def without_times(run: str) -> list[dict]:
        return [{k: v for k, v in r.items() if k != "seconds"}
                for r in strict_lines(tmp_path / run / "metrics.jsonl")]

    assert [r["update"] for r in without_times("b")] == [1, 2, 3]
    assert without_times("b") == without_times("a")


def test_trainer_writes_an_undefined_explained_variance_as_null(tmp_path, monkeypatch):
    monkeypatch.setattr("trainers.marl.trainer.explained_variance", lambda *_: math.nan)
    marl(tmp_path).train()
    records = strict_lines(tmp_path / "metrics.jsonl")
    assert [r["leader/explained_variance"] for r in records] == [None, None]
    state = json.loads((tmp_path / "checkpoint-2" / "trainer_state.json").read_text())
    assert [r["leader/explained_variance"] for r in state["history"]] == [None, None]
    assert all(math.isnan(r["leader/explained_variance"])
               for r in load_trainer_state(tmp_path / "checkpoint-2")["history"])


@pytest.mark.parametrize("name", ["optimizer.pt", "trainer_state.pt"])  # new, older format
def test_trainer_refuses_a_checkpoint_holding_a_pickled_object(tmp_path, name):
    marl(tmp_path / "run").train()
    checkpoint = tmp_path / "run" / "checkpoint-2"
    if name == "trainer_state.pt":  # the older checkpoint: one torch.save of the whole state
        (checkpoint / "trainer_state.json").unlink(), (checkpoint / "optimizer.pt").unlink()
        state = {"update": 2, "history": [], "optimizers": {}, "schedulers": {}}
    else:
        state = load_state(checkpoint / name)
    torch.save({**state, "payload": Payload(tmp_path / "constructed")}, checkpoint / name)
    write_manifest(checkpoint, 2)  # a well-formed checkpoint, as if from elsewhere
    with pytest.raises(CheckpointError, match=rf"{re.escape(name)} cannot be loaded"):
        marl(tmp_path / "run", total_updates=3, resume_from_checkpoint=True).train()
    assert not (tmp_path / "constructed").exists()


def test_trainer_state_json_and_the_older_trainer_state_pt_load_the_same(tmp_path):
    from trainers.runs.run_dir import load_trainer_state, save_trainer_state

    param = torch.nn.Parameter(torch.ones(3))
    optimizer = torch.optim.AdamW([param], lr=1e-3)
    param.grad = torch.full((3,), 0.5)
    optimizer.step()
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 0.5 ** step)
    scheduler.step()
    history = [{"epoch": 1, "leader_utility": 0.25, "leader/explained_variance": math.nan}]
    new, old = tmp_path / "new", tmp_path / "old"
    new.mkdir(), old.mkdir()
    save_trainer_state(new, 1, history, {"leader": optimizer}, {"leader": scheduler})
    text = (new / "trainer_state.json").read_text()
    assert "NaN" not in text and json.loads(text)["history"][0][
        "leader/explained_variance"] is None  # strict JSON: undefined is null
    torch.save({"epoch": 1, "history": history, "optimizers": {"leader": optimizer.state_dict()},
                "schedulers": {"leader": scheduler.state_dict()}}, old / "trainer_state.pt")
    a, b = load_trainer_state(new), load_trainer_state(old)
    assert a["epoch"] == b["epoch"] == 1 and a["schedulers"] == b["schedulers"]
    assert math.isnan(a["history"][0]["leader/explained_variance"])
    assert a["history"][0]["leader_utility"] == b["history"][0]["leader_utility"]
    sa, sb = a["optimizers"]["leader"]["state"][0], b["optimizers"]["leader"]["state"][0]
    assert all(torch.equal(sa[k], sb[k]) for k in sb)
