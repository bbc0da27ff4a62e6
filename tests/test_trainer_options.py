"""``report_to`` and ``disable_tqdm`` in every trainer, as transformers' ``TrainingArguments``:
the MARL trainer (update records), the distiller (round records) and the Stackelberg PPO trainer
(epoch records). ``report_to`` 'none' (or []) writes metrics.jsonl/csv only; 'tensorboard' also
writes TensorBoard event files under ``output_dir/agentic-mac``; an unknown or uninstalled
tracker is refused naming the field. ``disable_tqdm`` True: nothing on stderr from tqdm."""

from __future__ import annotations

from pathlib import Path

import pytest
import test_marl  # tests/ is on sys.path under pytest (rootdir-relative "prepend" imports)
import test_student

from textgame.config import ConfigError
from trainers.marl import MARLConfig, MARLTrainer
from trainers.runs.run_dir import TRACKER_PROJECT
from trainers.student.config import DistillConfig
from trainers.student.distill import Distiller

pytestmark = pytest.mark.usefixtures("one_thread")


def marl(output_dir: Path, **options) -> MARLTrainer:
    return MARLTrainer(test_marl.tiny_config(output_dir, total_updates=2, **options))


def distiller(output_dir: Path, **options) -> Distiller:
    return Distiller(test_student.tiny_config(output_dir, bc_episodes=16, dagger_rounds=1,
                                              dagger_episodes=16, epochs_per_round=1,
                                              **options))


# name: (trainer factory, the records' step key, a metric every record has)
TRAINERS = {"marl": (marl, "update", "leader_utility"),
            "distill": (distiller, "round", "rbg_agreement")}


def event_scalars(output_dir: Path, tag: str) -> list[tuple[int, float]]:
    """(step, value) of every ``tag`` scalar in the TensorBoard files of ``output_dir``."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(output_dir / TRACKER_PROJECT))
    events.Reload()
    return [(e.step, e.value) for e in events.Scalars(tag)]


# -------------------------------------------------------------------------- disable_tqdm
@pytest.mark.parametrize("name", TRAINERS)
def test_disable_tqdm_writes_nothing_to_stderr(name, tmp_path, capsys):
    make, _, _ = TRAINERS[name]
    make(tmp_path, disable_tqdm=True).train()
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("name", TRAINERS)
def test_the_progress_bar_shows_by_default(name, tmp_path, capsys):
    make, _, _ = TRAINERS[name]
    make(tmp_path).train()
    assert "2/2 [" in capsys.readouterr().err


@pytest.mark.parametrize("config", [MARLConfig, DistillConfig])
def test_disable_tqdm_must_be_a_bool(config):
    teacher = {"teacher": "max_weight/dictator"} if config is DistillConfig else {}
    with pytest.raises(ConfigError, match=rf"{config.__name__}\.disable_tqdm = 'yes' is "
                                          r"invalid; allowed: True or False"):
        config(disable_tqdm="yes", **teacher)


# ----------------------------------------------------------------------------- report_to
@pytest.mark.parametrize("name", TRAINERS)
@pytest.mark.parametrize("report_to", ["none", ["none"], []])
def test_report_to_none_writes_no_tracker_files(name, report_to, tmp_path):
    make, _, _ = TRAINERS[name]
    trainer = make(tmp_path, report_to=report_to)
    assert trainer.config.report_to == []
    trainer.train()
    assert not (tmp_path / TRACKER_PROJECT).exists()
    assert not list(tmp_path.rglob("events.out.tfevents.*"))


@pytest.mark.parametrize("name", TRAINERS)
def test_report_to_tensorboard_logs_every_record_at_its_step(name, tmp_path):
    pytest.importorskip("tensorboard")
    make, step, metric = TRAINERS[name]
    trainer = make(tmp_path, report_to="tensorboard")
    assert trainer.config.report_to == ["tensorboard"]
    history = trainer.train()
    assert list((tmp_path / TRACKER_PROJECT).glob("events.out.tfevents.*"))
    logged = event_scalars(tmp_path, metric)
    assert [s for s, _ in logged] == [r[step] for r in history]
    assert [v for _, v in logged] == pytest.approx([r[metric] for r in history], rel=1e-6)


def test_overwrite_output_dir_deletes_the_previous_runs_tracker_files(tmp_path):
    pytest.importorskip("tensorboard")
    marl(tmp_path, report_to=["tensorboard"]).train()
    assert (tmp_path / TRACKER_PROJECT).is_dir()
    marl(tmp_path, overwrite_output_dir=True).train()
    assert not (tmp_path / TRACKER_PROJECT).exists()


def test_an_output_dir_holding_tracker_files_holds_a_run(tmp_path):
    (tmp_path / TRACKER_PROJECT).mkdir()
    with pytest.raises(ConfigError, match=rf"MARLConfig\.output_dir = .* \(it holds "
                                          rf"{TRACKER_PROJECT}\)"):
        marl(tmp_path).train()


@pytest.mark.parametrize("config", [MARLConfig, DistillConfig])
@pytest.mark.parametrize("report_to, allowed", [
    ("bogus", r"'none', 'all' or trackers installed here: \[.*\] \(accelerate knows \[.*'wandb'"),
    (["none", "tensorboard"], r"'none' alone, or tracker names"),
    ([3], r"'none', a tracker name or a list of them")])
def test_report_to_refuses_what_accelerate_cannot_log_to(config, report_to, allowed):
    teacher = {"teacher": "max_weight/dictator"} if config is DistillConfig else {}
    with pytest.raises(ConfigError, match=rf"{config.__name__}\.report_to = .* is invalid; "
                                          rf"allowed: {allowed}"):
        config(report_to=report_to, **teacher)


# ---------------------------------------------------------------------- Stackelberg PPO
def stackelberg(tiny_path: str, output_dir: Path, **options):
    import test_trainer

    return test_trainer.make_trainer(test_trainer.run_config(
        tiny_path, output_dir, total_epochs=2, save_every=0, **options))


def test_stackelberg_disable_tqdm_writes_nothing_to_stderr(tiny_path, tmp_path, capsys):
    trainer = stackelberg(tiny_path, tmp_path, disable_tqdm=True)
    capsys.readouterr()  # transformers' own bar of loading the weights: before the trainer
    trainer.train()
    assert capsys.readouterr().err == ""


def test_stackelberg_report_to_tensorboard_logs_every_epoch(tiny_path, tmp_path, capsys):
    pytest.importorskip("tensorboard")
    history = stackelberg(tiny_path, tmp_path, report_to=["tensorboard"]).train()
    assert "2/2 [" in capsys.readouterr().err  # the bar, by default
    logged = event_scalars(tmp_path, "leader_utility")
    assert [s for s, _ in logged] == [r["epoch"] for r in history] == [1, 2]
    assert [v for _, v in logged] == pytest.approx([r["leader_utility"] for r in history],
                                                  rel=1e-6)
