"""``StudentModel``: the two student networks, the cell shape they were built for, save and load.

A saved student is a directory with ``student_config.json`` (architecture, :class:`CellShape`,
the teacher it was distilled from, its decoding) and ``model.safetensors``;
:mod:`trainers.student.onnx` adds ``leader.onnx`` and ``follower.onnx``. Nothing is pickled.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence
from pathlib import Path

from safetensors.torch import load_file, save_file
from torch import nn

from trainers.student.features import CellShape, follower_dim, leader_dims
from trainers.student.networks import FollowerStudent, LeaderStudent

CONFIG_FILE, WEIGHTS_FILE = "student_config.json", "model.safetensors"
DECODINGS = ("greedy", "sample")  # each head's mode, or a draw from its distribution


def check_decoding(decoding: str) -> str:
    if decoding not in DECODINGS:
        raise ValueError(f"decoding = {decoding!r} is invalid; allowed: {list(DECODINGS)}")
    return decoding


class StudentModel(nn.Module):
    """``leader`` (:class:`LeaderStudent`) and ``follower`` (:class:`FollowerStudent`).

    ``decoding`` is how its policies act unless told otherwise: 'greedy' (each head's mode) or
    'sample' (draws from the heads' distributions: a stochastic teacher's behaviour)."""

    def __init__(self, shape: CellShape, history_len: int, leader_hidden: int,
                 follower_hidden: Sequence[int], teacher: str = "",
                 decoding: str = "greedy") -> None:
        super().__init__()
        self.shape, self.history_len, self.teacher = shape, history_len, teacher
        self.decoding = check_decoding(decoding)
        self.leader_hidden, self.follower_hidden = leader_hidden, list(follower_hidden)
        global_dim, ue_dim = leader_dims(shape, history_len)
        self.leader = LeaderStudent(global_dim, ue_dim, shape.n_rbgs, leader_hidden)
        self.follower = FollowerStudent(follower_dim(shape, history_len), follower_hidden,
                                        shape.n_rbgs, shape.ucm_levels)

    def meta(self) -> dict:
        return {"shape": dataclasses.asdict(self.shape), "history_len": self.history_len,
                "leader_hidden": self.leader_hidden, "follower_hidden": self.follower_hidden,
                "teacher": self.teacher, "decoding": self.decoding}

    def save(self, directory: str | os.PathLike) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / CONFIG_FILE).write_text(json.dumps(self.meta(), indent=2))
        state = {k: v.detach().contiguous() for k, v in self.state_dict().items()}
        save_file(state, str(directory / WEIGHTS_FILE))
        return directory

    @classmethod
    def load(cls, directory: str | os.PathLike) -> StudentModel:
        directory = Path(directory)
        if not (directory / CONFIG_FILE).is_file():
            raise FileNotFoundError(f"{directory} holds no {CONFIG_FILE}; expected a directory "
                                    "written by trainers.student.distill (final/ or a checkpoint)")
        meta = json.loads((directory / CONFIG_FILE).read_text())
        model = cls(CellShape(**meta["shape"]), meta["history_len"], meta["leader_hidden"],
                    meta["follower_hidden"], meta.get("teacher", ""),
                    meta.get("decoding", "greedy"))  # students saved before decodings: greedy
        model.load_state_dict(load_file(str(directory / WEIGHTS_FILE)))
        return model.eval()
