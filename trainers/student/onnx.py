"""ONNX export of both students (dynamic B and I) and an onnxruntime backend.

``export_onnx(model, dir)`` writes ``leader.onnx`` (inputs ``global_x`` (B, Dg), ``ue_x``
(B, I, Db), ``mask`` (B, I) bool; outputs ``dcm`` (B, N) int64, ``bids`` (B, 1 + I, N)) and
``follower.onnx`` (input ``ue_x`` (B, I, Du); outputs ``bitmap`` (B, I, N) bool, ``ucm`` (B, I)
int64, ``bitmap_logits``, ``ucm_logits``). N is fixed by the model; B and I are free, so one
file serves every number of UEs. The DCM is one TopK over the bids.

A MAC stack that calls the student every TTI needs only onnxruntime and numpy:
:class:`OnnxBackend` plugs into :class:`trainers.student.policies.StudentLeader`/``Follower``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from textgame.config import ConfigError
from trainers.student.features import RAW_COLUMNS
from trainers.student.model import StudentModel

LEADER_FILE, FOLLOWER_FILE = "leader.onnx", "follower.onnx"
OPSET = 18  # the lowest the dynamo exporter translates to without a version conversion


def export_onnx(model: StudentModel, directory: str | os.PathLike) -> tuple[Path, Path]:
    """Write ``leader.onnx`` and ``follower.onnx`` into ``directory``; returns their paths.

    ``torch.onnx.export(..., dynamo=True)``: ``torch.export`` traces each network once with
    B and I symbolic (``torch.export.Dim``), and onnxscript translates the graph."""
    from torch.export import Dim

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    global_dim = model.leader.global_encoder.in_features
    ue_dim = model.leader.ue_encoder[0].in_features + RAW_COLUMNS
    follower_dim = model.follower.body[0].in_features
    leader_args = (torch.zeros(2, global_dim), torch.zeros(2, 3, ue_dim),
                   torch.ones(2, 3, dtype=torch.bool))
    paths = directory / LEADER_FILE, directory / FOLLOWER_FILE
    batch, ues = Dim("batch"), Dim("ues")
    dynamic = {0: batch, 1: ues}
    # one self-contained file per network (no .onnx.data beside it), nothing printed
    options = dict(opset_version=OPSET, external_data=False, verbose=False)
    with warnings.catch_warnings(), torch.no_grad(), _quiet_registry():
        warnings.simplefilter("ignore")  # torch.export's notices on symbolic axis names
        torch.onnx.export(model.leader, leader_args, str(paths[0]), dynamo=True,
                          input_names=["global_x", "ue_x", "mask"],
                          output_names=["dcm", "bids"],
                          dynamic_shapes=({0: batch}, dynamic, dynamic), **options)
        torch.onnx.export(model.follower, (torch.zeros(2, 3, follower_dim),), str(paths[1]),
                          dynamo=True, input_names=["ue_x"],
                          output_names=["bitmap", "ucm", "bitmap_logits", "ucm_logits"],
                          dynamic_shapes=(dynamic,), **options)
    return paths


@contextlib.contextmanager
def _quiet_registry() -> Iterator[None]:
    """The exporter's registry warns once per torchvision op it cannot find (torchvision is no
    dependency of ours): silenced while exporting."""
    registry = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = registry.level
    registry.setLevel(logging.ERROR)
    try:
        yield
    finally:
        registry.setLevel(level)


def session(path: str | os.PathLike, threads: int = 1):
    """An onnxruntime CPU session with ``threads`` intra-op threads (1: one core per cell)."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise ConfigError("the onnx student runtime needs onnxruntime, which is not installed; "
                          "allowed: pip install 'agentic-mac[student]', or the 'torch' "
                          "runtime") from None

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


class OnnxBackend:
    """Greedy decisions from a student directory's ``leader.onnx`` and ``follower.onnx``
    (sampling runs in PyTorch: :class:`trainers.student.policies.TorchBackend`)."""

    decoding = "greedy"

    def __init__(self, directory: str | os.PathLike, threads: int = 1) -> None:
        directory = Path(directory)
        missing = [f for f in (LEADER_FILE, FOLLOWER_FILE) if not (directory / f).is_file()]
        if missing:
            raise FileNotFoundError(f"{directory} holds no {missing[0]}; write it with "
                                    "trainers.student.onnx.export_onnx")
        self.leader_session = session(directory / LEADER_FILE, threads)
        self.follower_session = session(directory / FOLLOWER_FILE, threads)

    def leader_outputs(self, global_x, ue_x, mask) -> list[np.ndarray]:
        """[dcm (B, N), bids (B, 1 + I, N)]."""
        return self.leader_session.run(None, {"global_x": global_x, "ue_x": ue_x, "mask": mask})

    def follower_outputs(self, ue_x) -> list[np.ndarray]:
        """[bitmap, ucm, bitmap_logits, ucm_logits]."""
        return self.follower_session.run(None, {"ue_x": ue_x})

    def leader(self, global_x, ue_x, mask, generator=None) -> np.ndarray:
        return self.leader_session.run(["dcm"], {"global_x": global_x, "ue_x": ue_x,
                                                 "mask": mask})[0]

    def follower(self, ue_x, generator=None) -> tuple[np.ndarray, np.ndarray]:
        bitmap, ucm = self.follower_session.run(["bitmap", "ucm"], {"ue_x": ue_x})
        return bitmap, ucm
