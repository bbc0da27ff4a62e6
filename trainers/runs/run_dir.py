"""The files a training run writes into its output directory, shared by every trainer (design §6).

A run is ``checkpoint-<step>/`` directories, ``metrics.jsonl`` (one JSON record per logged step;
undefined values such as a NaN explained variance are ``null``), ``metrics.csv`` (the records'
union of keys, the step first), ``final/`` and the trainer's own entries (``extra``: expert
seeding, trackers). Other files in ``output_dir`` (a recipe's cached tiny model, notes) are not
part of the run: they never count as a previous run and are never deleted.

Starting (:func:`start_run`) is explicit, as in ``transformers.Trainer``:
``resume_from_checkpoint`` true = the latest complete checkpoint of ``output_dir`` (none is an
error), a path = that checkpoint; otherwise ``output_dir`` must hold no previous run, unless
``overwrite_output_dir``, after which :func:`clear_run` deletes the previous run's entries.

A checkpoint is written into ``.tmp-checkpoint-<step>/``, then ``checkpoint.json`` (every
file's size and SHA-256) is written last and the directory renamed with ``os.replace``: a
checkpoint whose manifest is missing or disagrees with its files (truncated, deleted, garbage)
is incomplete and skipped, with a warning, for the previous complete one. Nothing is unpickled:
tensors are safetensors, the trainer state is read by ``torch.load(..., weights_only=True)``
and RNG states are JSON.

``report_to`` (:func:`report_to_option`) sends the metrics to accelerate's trackers as well:
TensorBoard's files go to ``output_dir/agentic-mac`` (:data:`TRACKER_PROJECT`, a run entry).
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import math
import os
import random
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from textgame.config import fail_field

CHECKPOINT_PREFIX = "checkpoint-"
TMP_PREFIX = ".tmp-"
MANIFEST = "checkpoint.json"
TRAINER_STATE = "trainer_state.pt"  # torch.save of tensors and plain values: see load_state
TRAINER_STATE_JSON = "trainer_state.json"  # epoch, metrics history, LR schedulers: readable
OPTIMIZER_STATE = "optimizer.pt"  # the optimizers' tensors (torch.save, load_state)
METRICS_JSONL, METRICS_CSV, FINAL = "metrics.jsonl", "metrics.csv", "final"
EPISODES_CSV = "episodes.csv"  # the final evaluation's every episode (textgame.metrics)
RUN_ENTRIES = (METRICS_JSONL, METRICS_CSV, FINAL, EPISODES_CSV)

logger = logging.getLogger(__name__)


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded; the message names the file and why."""


# ------------------------------------------------------------------------------ starting
RESUME_HELP = (
    "Continue a run: true = the latest complete checkpoint in output_dir (an error when there "
    "is none), or the path of a checkpoint directory. Unset (or false), output_dir must hold "
    "no previous run (checkpoints, metrics, final/) unless overwrite_output_dir is set.")
OVERWRITE_HELP = (
    "Start over in an output_dir that holds a previous run: its checkpoints, metrics and "
    "final/ are deleted first (other files are kept). Excludes resume_from_checkpoint.")
_TRUE, _FALSE = ("true", "yes", "latest"), ("false", "no", "none", "")


def resume_option(owner: str, resume_from_checkpoint: Any, overwrite_output_dir: Any
                  ) -> bool | str | None:
    """``resume_from_checkpoint`` as True (latest), a path or None; checks both fields
    (``__post_init__``: a path is checked when the run starts, by :func:`start_run`)."""
    if not isinstance(overwrite_output_dir, bool):
        fail_field(owner, "overwrite_output_dir", overwrite_output_dir, "True or False")
    value = resume_from_checkpoint
    if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
        value = value.strip().lower() in _TRUE  # the command line gives strings
    if value is False:
        value = None
    if value is not None and value is not True and not isinstance(value, str | os.PathLike):
        fail_field(owner, "resume_from_checkpoint", resume_from_checkpoint,
              "true (the latest checkpoint in output_dir), a checkpoint path, or unset")
    if value is not None and overwrite_output_dir:
        fail_field(owner, "overwrite_output_dir", overwrite_output_dir,
              f"False when resume_from_checkpoint is set (= {resume_from_checkpoint!r})")
    return os.fspath(value) if isinstance(value, os.PathLike) else value


def run_entries(output_dir: str | Path, extra: Iterable[str] = ()) -> list[Path]:
    """The entries of ``output_dir`` that belong to a run (checkpoints, metrics, ``final``,
    ``extra``), sorted; [] when the directory is absent."""
    directory = Path(output_dir)
    if not directory.is_dir():
        return []
    names = {*RUN_ENTRIES, *extra}
    prefixes = (CHECKPOINT_PREFIX, TMP_PREFIX + CHECKPOINT_PREFIX)
    return sorted(p for p in directory.iterdir() if p.name in names or p.name.startswith(prefixes))


def start_run(owner: str, output_dir: str | Path, resume_from_checkpoint: bool | str | None,
              overwrite_output_dir: bool, extra: Iterable[str] = ()) -> Path | None:
    """The checkpoint to resume from, or None for a fresh start; raises ``ConfigError`` naming
    ``owner``'s field when the run directory and the two options disagree. Deletes nothing."""
    if resume_from_checkpoint is None:
        entries = run_entries(output_dir, extra)
        if entries and not overwrite_output_dir:
            held = ", ".join(p.name for p in entries[:4]) + (", ..." if len(entries) > 4 else "")
            fail_field(owner, "output_dir", str(output_dir),
                  f"a directory without a previous run (it holds {held}); set "
                  "resume_from_checkpoint (true = its latest checkpoint, or a path) to continue "
                  "it or overwrite_output_dir to start over")
        return None
    if resume_from_checkpoint is True:
        checkpoint = latest_complete_checkpoint(output_dir)
        if checkpoint is None:
            fail_field(owner, "resume_from_checkpoint", True,
                  f"true only when output_dir = {str(output_dir)!r} holds a complete checkpoint "
                  "(it holds no complete one; start without resume_from_checkpoint), or a "
                  "checkpoint path")
        logger.info("resuming from %s (%s)", checkpoint.name, checkpoint)
        return checkpoint
    checkpoint = Path(resume_from_checkpoint)
    problem = checkpoint_problem(checkpoint)
    if problem is not None:
        fail_field(owner, "resume_from_checkpoint", resume_from_checkpoint,
              f"true or a complete checkpoint directory ({problem})")
    entries = run_entries(output_dir, extra)
    if checkpoint.resolve().parent != Path(output_dir).resolve() and entries:
        fail_field(owner, "output_dir", str(output_dir),
              f"a directory without a run when resuming from {checkpoint} elsewhere (it holds "
              f"{entries[0].name}, ...), or resume_from_checkpoint inside it")
    step = checkpoint_step(checkpoint)
    later = [p.name for p in list_checkpoints(output_dir)
             if _step_of(p) > step and checkpoint_problem(p) is None]
    if later:
        fail_field(owner, "resume_from_checkpoint", resume_from_checkpoint,
              f"a checkpoint no older than those of output_dir = {str(output_dir)!r}: resuming "
              f"would overwrite its later {', '.join(later)}; move them or use another "
              "output_dir")
    logger.info("resuming from %s (%s)", checkpoint.name, checkpoint)
    return checkpoint


def open_run(owner: str, output_dir: str | Path, resume_from_checkpoint: bool | str | None,
             overwrite_output_dir: bool, extra: Iterable[str] = ()) -> Path | None:
    """:func:`start_run`, then, for a fresh start with ``overwrite_output_dir``, :func:`clear_run`
    (one process: the Stackelberg trainer does the two steps with barriers between them)."""
    checkpoint = start_run(owner, output_dir, resume_from_checkpoint, overwrite_output_dir, extra)
    if checkpoint is None and overwrite_output_dir:
        clear_run(output_dir, extra)
    return checkpoint


def clear_run(output_dir: str | Path, extra: Iterable[str] = ()) -> None:
    """Delete the previous run's entries (``overwrite_output_dir``); other files stay."""
    for path in run_entries(output_dir, extra):
        shutil.rmtree(path) if path.is_dir() else path.unlink()
        logger.info("overwrite_output_dir: deleted %s", path)


# --------------------------------------------------------------------------- checkpoints
def list_checkpoints(output_dir: str | Path) -> list[Path]:
    """``checkpoint-<step>`` directories, oldest first, complete or not (``.tmp-`` never)."""
    found = [p for p in Path(output_dir).glob(f"{CHECKPOINT_PREFIX}*")
             if p.is_dir() and p.name[len(CHECKPOINT_PREFIX):].isdigit()]
    return sorted(found, key=_step_of)


def _step_of(path: Path) -> int:
    return int(path.name.rsplit("-", 1)[1])


def checkpoint_step(path: Path) -> int:
    """The step a complete checkpoint was written at (its manifest's)."""
    return json.loads((path / MANIFEST).read_text())["step"]


def begin_checkpoint(output_dir: str | Path, step: int) -> Path:
    """An empty ``.tmp-checkpoint-<step>`` directory to write a checkpoint's files into."""
    tmp = Path(output_dir) / f"{TMP_PREFIX}{CHECKPOINT_PREFIX}{step}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    return tmp


def finish_checkpoint(tmp: Path, save_total_limit: int) -> Path:
    """Seal ``tmp`` (manifest last), rename it to ``checkpoint-<step>`` and keep the newest
    ``save_total_limit`` checkpoints up to this step (later ones are a skipped past's)."""
    step = _step_of(tmp)
    write_manifest(tmp, step)
    final = tmp.with_name(f"{CHECKPOINT_PREFIX}{step}")
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)  # atomic: a checkpoint directory is complete or absent
    kept = [p for p in list_checkpoints(final.parent) if _step_of(p) <= step]
    for old in kept[:-save_total_limit]:
        shutil.rmtree(old)
    return final


def write_manifest(directory: Path, step: int) -> None:
    files = sorted(p for p in directory.rglob("*") if p.is_file() and p.name != MANIFEST)
    manifest = {"step": step, "files": {
        p.relative_to(directory).as_posix(): {"bytes": p.stat().st_size, "sha256": _sha256(p)}
        for p in files}}
    (directory / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")


def checkpoint_problem(path: str | Path) -> str | None:
    """Why ``path`` is not a complete checkpoint, or None when its files match its manifest."""
    path = Path(path)
    if not path.is_dir():
        return "no such directory"
    try:
        manifest = json.loads((path / MANIFEST).read_text())
        files, step = manifest["files"], manifest["step"]
    except FileNotFoundError:
        return f"no {MANIFEST}: never completed"
    except (OSError, ValueError, KeyError, TypeError) as error:
        return f"unreadable {MANIFEST} ({error!r})"
    if not isinstance(step, int) or not isinstance(files, dict) or not files:
        return f"{MANIFEST} lists no step or no files"
    for name, meta in files.items():
        if not isinstance(meta, dict):
            return f"{MANIFEST} has no size and hash for {name!r}"
        if Path(name).is_absolute() or ".." in Path(name).parts:
            return f"{MANIFEST} names {name!r} outside the checkpoint"
        file = path / name
        if not file.is_file():
            return f"{name} is missing"
        if file.stat().st_size != meta.get("bytes"):
            return f"{name} has {file.stat().st_size} bytes, not {meta.get('bytes')} (truncated?)"
        if _sha256(file) != meta.get("sha256"):
            return f"{name} does not match its SHA-256 (corrupt)"
    return None


def latest_complete_checkpoint(output_dir: str | Path) -> Path | None:
    """The newest complete checkpoint; each newer incomplete one is skipped with a warning."""
    for path in reversed(list_checkpoints(output_dir)):
        problem = checkpoint_problem(path)
        if problem is None:
            return path
        logger.warning("skipping %s: %s; trying the previous checkpoint", path, problem)
    return None


def _sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


# ----------------------------------------------------------------------------- state
def load_state(path: Path) -> Any:
    """A ``torch.save``d state of tensors and plain Python values, unpickled with
    ``weights_only=True``: any other object is refused rather than constructed."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # UnpicklingError, RuntimeError of a damaged zip, ...
        first = str(error).strip().splitlines()[0] if str(error).strip() else repr(error)
        raise CheckpointError(f"{path} cannot be loaded as tensors and plain Python values "
                              f"(torch.load weights_only=True): {first}") from error


def rng_state(generators: dict[str, np.random.Generator]) -> dict:
    """torch's, numpy's and Python's global RNG states and ``generators``' as JSON values."""
    numpy = np.random.get_state(legacy=False)
    numpy["state"] = {"key": numpy["state"]["key"].tolist(), "pos": numpy["state"]["pos"]}
    version, internal, gauss = random.getstate()
    state = {"torch": torch.get_rng_state().tolist(), "numpy": numpy,
             "python": [version, list(internal), gauss],
             "generators": {k: g.bit_generator.state for k, g in generators.items()}}
    if torch.cuda.is_available():
        state["cuda"] = [s.tolist() for s in torch.cuda.get_rng_state_all()]
    return state


def set_rng_state(state: dict, generators: dict[str, np.random.Generator]) -> None:
    torch.set_rng_state(torch.tensor(state["torch"], dtype=torch.uint8))
    np.random.set_state(state["numpy"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    for name, generator in generators.items():
        generator.bit_generator.state = state["generators"][name]
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([torch.tensor(s, dtype=torch.uint8) for s in state["cuda"]])


def save_json(path: Path, value: Any) -> None:
    path.write_text(json.dumps(value, allow_nan=False) + "\n")


def save_trainer_state(directory: Path, epoch: int, history: list[dict], optimizers: dict,
                       schedulers: dict, step: str = "epoch") -> None:
    """``trainer_state.json`` (the steps done, under the name ``step`` - the Stackelberg
    trainer's epochs, the MARL trainer's updates -, every logged record - undefined values as
    null - and the LR schedulers' states, as transformers' Trainer keeps its own) and
    ``optimizer.pt``."""
    save_json(directory / TRAINER_STATE_JSON, {
        step: epoch, "history": [finite(r) for r in history],
        "schedulers": {r: s.state_dict() for r, s in schedulers.items()}})
    torch.save({"optimizers": {r: o.state_dict() for r, o in optimizers.items()}},
               directory / OPTIMIZER_STATE)


def load_trainer_state(directory: Path) -> dict:
    """What :func:`save_trainer_state` wrote (null back to NaN), or a checkpoint's single
    ``trainer_state.pt`` from before it: ``{epoch (or its step's name), history, optimizers,
    schedulers}``."""
    if not (directory / TRAINER_STATE_JSON).is_file():
        return load_state(directory / TRAINER_STATE)
    state = load_json(directory / TRAINER_STATE_JSON)
    state["history"] = [{k: math.nan if v is None else v for k, v in r.items()}
                        for r in state["history"]]
    state["optimizers"] = load_state(directory / OPTIMIZER_STATE)["optimizers"]
    return state


def load_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise CheckpointError(f"{path} is not readable JSON: {error}") from error


# ------------------------------------------------------------------------------ metrics
def finite(record: dict) -> dict:
    """JSON has no NaN or infinity: undefined values (e.g. constant returns) become None."""
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v)
            for k, v in record.items()}


def write_metrics(output_dir: str | Path, records: Iterable[dict], step: str,
                  append: dict | None = None) -> None:
    """``metrics.csv`` from ``records``; ``metrics.jsonl`` gets ``append`` as one more line, or
    is rewritten from ``records`` when ``append`` is None (after a resume)."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    records = [finite(r) for r in records]
    if append is None:
        with open(output_dir / METRICS_JSONL, "w") as f:
            f.writelines(json.dumps(r, allow_nan=False) + "\n" for r in records)
    else:
        with open(output_dir / METRICS_JSONL, "a") as f:
            f.write(json.dumps(finite(append), allow_nan=False) + "\n")
    keys = sorted({k for r in records for k in r}, key=lambda k: (k != step, k))
    with open(output_dir / METRICS_CSV, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        writer.writerows(records)


# ----------------------------------------------------------------------------- trackers
TRACKER_PROJECT = "agentic-mac"  # the trackers' project: TensorBoard writes output_dir/agentic-mac
REPORT_TO_HELP = (
    "accelerate trackers the metrics also go to ('tensorboard', 'wandb', ..., 'all' = every "
    "installed one), as transformers' report_to; 'none' or [] = metrics.jsonl/csv only.")
DISABLE_TQDM_HELP = "Hide the progress bar (transformers' disable_tqdm); False = show it."


def report_to_option(owner: str, report_to: Any) -> list[str]:
    """``report_to`` as a list of tracker names ('none' = []); a name accelerate does not know,
    or whose package is not installed, is refused naming ``owner``'s field."""
    names = [report_to] if isinstance(report_to, str) else report_to
    if not isinstance(names, list | tuple) or not all(isinstance(n, str) for n in names):
        fail_field(owner, "report_to", report_to, "'none', a tracker name or a list of them")
    if "none" in names:
        if len(names) > 1:
            fail_field(owner, "report_to", report_to, "'none' alone, or tracker names")
        return []
    if not names:
        return []
    from accelerate.tracking import LOGGER_TYPE_TO_CLASS, get_available_trackers

    installed = sorted(str(t) for t in get_available_trackers())
    for name in names:
        if name != "all" and name not in installed:
            known = "" if name in LOGGER_TYPE_TO_CLASS else \
                f" (accelerate knows {sorted(LOGGER_TYPE_TO_CLASS)})"
            fail_field(owner, "report_to", report_to,
                       f"'none', 'all' or trackers installed here: {installed}{known}")
    return list(names)


class Trackers:
    """The accelerate trackers of ``report_to`` for a trainer without an ``Accelerator``: what
    ``Accelerator(log_with=report_to, project_dir=output_dir).init_trackers(TRACKER_PROJECT,
    config)`` builds for the Stackelberg trainer (TensorBoard: event files and hparams in
    ``output_dir/agentic-mac``), without making the process's ``AcceleratorState``, which
    would fix the mixed precision of every later Accelerator. No trackers: every call is a no-op."""

    def __init__(self, report_to: Iterable[str], output_dir: str | Path, config: dict) -> None:
        self.trackers = []
        if not report_to:
            return
        from accelerate.tracking import LOGGER_TYPE_TO_CLASS, filter_trackers

        for name in filter_trackers(list(report_to), str(output_dir)):
            tracker_class = LOGGER_TYPE_TO_CLASS[str(name)]
            directory = (str(output_dir),) if tracker_class.requires_logging_directory else ()
            tracker = tracker_class(TRACKER_PROJECT, *directory)
            tracker.start()
            tracker.store_init_configuration({k: str(v) for k, v in config.items()})
            self.trackers.append(tracker)

    def log(self, record: dict, step: str) -> None:
        """``record`` at the step ``record[step]`` (the step itself is not a metric)."""
        values = {k: v for k, v in record.items() if k != step}
        for tracker in self.trackers:
            tracker.log(values, step=record[step])

    def finish(self) -> None:
        for tracker in self.trackers:
            tracker.finish()
