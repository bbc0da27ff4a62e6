"""The compiled one-call TTI of the served student (trainers.student.compiled, numba) decides
exactly as the onnxruntime/PyTorch path, reads the exported weights, and the loader falls back to
onnxruntime with one log line where numba is absent."""

import importlib.util
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from safetensors.torch import load_file, save_file
from test_student import scenario, student  # tests/ is on sys.path under pytest

from textgame.game import StackelbergGame
from trainers.student.compiled import CompiledStudent
from trainers.student.model import WEIGHTS_FILE
from trainers.student.onnx import export_onnx
from trainers.student.policies import TorchBackend
from trainers.student.realtime import RealtimeStudent, load_realtime

MAX_UES = 14


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """An untrained student (history 2, leader hidden 32, followers two layers of unequal
    width, as the widest-padded body of the compiled path) saved and exported:
    (model, directory)."""
    model = student(hidden=32, follower_hidden=(24, 16))
    directory = tmp_path_factory.mktemp("compiled")
    model.save(directory)
    export_onnx(model, directory)
    return model, directory


@pytest.fixture(scope="module")
def compiled(exported):
    return CompiledStudent.load(exported[1], MAX_UES)


def assert_same_decisions(model, compiled, sc, seeds) -> int:
    """Plays ``sc`` on ``seeds`` with RealtimeStudent on PyTorch (itself tested against the
    batched student) and asserts ``compiled`` decides every DCM, bitmap and UCM the same, both
    fed the same observations TTI by TTI; returns the TTIs played."""
    reference = RealtimeStudent(model, TorchBackend(model), MAX_UES)
    game, ttis = StackelbergGame(sc, 1), 0
    for seed in seeds:
        reference.reset()
        compiled.reset()
        obs = game.reset(seed)
        while True:
            dcm = reference.leader(obs)
            assert np.array_equal(compiled.leader(obs), dcm), (seed, obs.t)
            follower_obs = game.step_leader(dcm[None])
            bitmap, ucm = reference.followers(follower_obs)
            ours = compiled.followers(follower_obs)
            assert np.array_equal(ours[0], bitmap) and np.array_equal(ours[1], ucm), obs.t
            ttis += 1
            step = game.step_followers(bitmap[None], ucm[None])
            if step.done:
                break
            obs = step.leader_obs
    return ttis


def churning(n_ues: int):
    """A cell of I UEs in which UEs join and leave, so I_t and the histories vary."""
    return scenario(ue_counts=[n_ues], max_ues=MAX_UES, join_prob=0.1, leave_prob=0.1)


@pytest.mark.parametrize("n_ues", range(1, MAX_UES + 1))
def test_compiled_decisions_equal_the_reference_path_for_every_i(exported, compiled, n_ues):
    """Every DCM, bitmap and UCM of churning cells equals RealtimeStudent's."""
    sc = churning(n_ues)
    assert assert_same_decisions(exported[0], compiled, sc, (0, 1)) == 2 * sc.cell.episode_ttis


@pytest.mark.parametrize("follower_hidden", [(16,), (24, 32, 16)])
def test_followers_of_one_and_three_layers_decide_as_the_reference(follower_hidden, tmp_path):
    """The follower body's layer loop ends in either buffer: after one layer (no loop), and
    after three (two swaps); the fixture's two layers end in the other one."""
    model = student(hidden=32, follower_hidden=follower_hidden)
    model.save(tmp_path)
    export_onnx(model, tmp_path)
    compiled = CompiledStudent.load(tmp_path, MAX_UES)
    for n_ues in (3, MAX_UES):
        sc = churning(n_ues)
        assert assert_same_decisions(model, compiled, sc, (0,)) == sc.cell.episode_ttis


def test_a_tti_with_nobody_in_the_cell_decides_as_the_reference(exported, compiled):
    """A TTI with no active UE between ordinary ones (the auction over no UE: nobody gets any
    RBG; no follower row): the same decisions as RealtimeStudent, and the same afterwards, when
    every UE is back with no history."""
    model, _ = exported
    reference = RealtimeStudent(model, TorchBackend(model), MAX_UES)
    game = StackelbergGame(scenario(ue_counts=[3], max_ues=MAX_UES), 1)
    reference.reset()
    compiled.reset()
    obs = game.reset(0)
    for tti in range(4):
        nobody = tti == 1
        if nobody:
            obs.active = np.zeros_like(obs.active)
            obs.n_active = obs.active.sum(1)
        dcm = reference.leader(obs)
        assert np.array_equal(compiled.leader(obs), dcm), tti
        follower_obs = game.step_leader(dcm[None])
        if nobody:
            follower_obs.active = obs.active
        bitmap, ucm = reference.followers(follower_obs)
        ours = compiled.followers(follower_obs)
        assert np.array_equal(ours[0], bitmap) and np.array_equal(ours[1], ucm), tti
        if nobody:
            assert not dcm.any() and not bitmap.any() and not ucm.any()
        obs = game.step_followers(bitmap[None], ucm[None]).leader_obs


def test_one_call_tti_equals_the_leader_then_the_followers(exported, compiled):
    """decide() (leader, the DCM's bits, followers in one call) = leader() then followers(),
    two students fed the same observations."""
    one_call = CompiledStudent.load(exported[1], MAX_UES)
    game = StackelbergGame(scenario(ue_counts=[6], max_ues=MAX_UES), 1)
    compiled.reset()
    obs = game.reset(3)
    while True:
        dcm = compiled.leader(obs)
        follower_obs = game.step_leader(dcm[None])
        bitmap, ucm = compiled.followers(follower_obs)
        ours = one_call.decide(obs, follower_obs)
        for mine, theirs in zip(ours, (dcm, bitmap, ucm), strict=True):
            assert np.array_equal(mine, theirs), obs.t
        step = game.step_followers(bitmap[None], ucm[None])
        if step.done:
            break
        obs = step.leader_obs


ENTRY_POINTS = ("new_leader_weights", "new_follower_weights", "new_cell_state", "leader_tti",
                "follower_tti", "decide_tti", "_reset")
LOAD_AND_COUNT = """import json, sys
from trainers.student import compiled
compiled.CompiledStudent.load(sys.argv[1], int(sys.argv[2]))
print(json.dumps({name: [sum(getattr(compiled, name).stats.cache_hits.values()),
                         sum(getattr(compiled, name).stats.cache_misses.values())]
                  for name in sys.argv[3:]}))"""


def test_a_new_process_loads_the_compiled_path_from_numbas_cache(exported, compiled):
    """The structs the compiled functions take are numba StructRefs, so numba caches those
    functions on disk; with jitclass arguments every process compiled them again (~25 s on the
    2-core reference CPU). This process has compiled (or loaded) them on the game's dtypes
    (the ``compiled`` fixture), so a new process finds every entry point in the cache."""
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "-c", LOAD_AND_COUNT, str(exported[1]), str(MAX_UES),
                           *ENTRY_POINTS], capture_output=True, text=True, cwd=root, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(root)})
    assert done.returncode == 0, done.stderr[-2000:]
    counts = json.loads(done.stdout.strip().splitlines()[-1])
    assert counts == {name: [1, 0] for name in ENTRY_POINTS}, counts


def test_a_stale_export_is_refused(exported, tmp_path):
    """The compiled path reads model.safetensors and checks it against the ONNX files, so it
    never serves weights the onnxruntime fallback does not."""
    _, directory = exported
    for item in directory.iterdir():
        (tmp_path / item.name).write_bytes(item.read_bytes())
    weights = load_file(tmp_path / WEIGHTS_FILE)
    weights["leader.bid_head.bias"] = weights["leader.bid_head.bias"] + 1.0
    save_file(weights, tmp_path / WEIGHTS_FILE)
    with pytest.raises(ValueError, match=r"leader.onnx does not hold leader.bid_head.bias .* "
                                         r"the export is stale"):
        CompiledStudent.load(tmp_path, MAX_UES)


def test_the_loader_falls_back_to_onnxruntime_with_one_log_line(exported, monkeypatch, caplog):
    _, directory = exported
    assert isinstance(load_realtime(directory, MAX_UES), CompiledStudent)
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a, **k: None if name == "numba" else real(name, *a, **k))
    with caplog.at_level(logging.INFO, logger="trainers.student.realtime"):
        served = load_realtime(directory, MAX_UES)
    assert type(served) is RealtimeStudent
    assert [r.getMessage() for r in caplog.records] == [
        "numba is not installed: serving the student with onnxruntime "
        "(pip install 'agentic-mac[realtime]' for the compiled path)"]
