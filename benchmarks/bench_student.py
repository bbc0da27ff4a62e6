"""Decision latency of the distilled student per TTI, next to the LLM policy's (App. C-C, Fig. 14).

    python benchmarks/bench_student.py                          # fresh student, I = 2..10
    python benchmarks/bench_student.py --student runs/student-mw/final --ttis 200
    python benchmarks/bench_student.py --ues 2 5 10 --llm runs/smollm2-ppo-rr/final

One TTI decision = the leader (features of the BS's observation, the DCM) and the followers of
all active UEs of one cell (their features, bitmaps and UCMs), single-threaded (one torch
thread, one onnxruntime intra-op thread). Timed per TTI over whole episodes of a cell with I UEs
(the simulator's own step is not timed); median and p99 in microseconds, end to end and
network only (the forward passes on ready features). Runtimes: PyTorch (eager, inference mode)
and onnxruntime on the exported graphs, each through the batched policies
(``StudentLeader``/``StudentFollower`` at B = 1); "lean" is the deployed one-cell path
(:class:`trainers.student.realtime.RealtimeStudent`: same actions, preallocated features) on
onnxruntime, with its feature extraction alone in the next column; "compiled" is
:class:`trainers.student.compiled.CompiledStudent` (features, auction and followers in numba, one
call per role in the game's turn order, then ``decide``: the whole TTI in one call; the
``[realtime]`` extra, "-" without numba), with the medians of its parts:
features and network timed kernel by kernel on a twin, glue the rest of the median TTI (the
Python calls, checks and copies around the kernels). The LLM column is a
Stackelberg policy's decision latency per TTI for the same cell (``--llm_ttis`` TTIs after one
warm-up episode): by default a fresh policy on the offline tiny model of ``trainers.tiny`` (a
random Llama, LoRA adapters, PAG decoding), or trained adapters with ``--llm DIR`` (e.g.
issue 12's SmolLM2: ``--llm runs/smollm2-ppo-rr/final``). Target: median <= 50 us and p99 <=
100 us per TTI at I = 10 on one core, <= 25 us at I = 2. Other processes on the machine inflate
every figure (the p99 most); run it on an idle core.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from textgame.config import ScenarioConfig
from textgame.game import StackelbergGame
from trainers.student.features import CellShape
from trainers.student.model import CONFIG_FILE, StudentModel
from trainers.student.onnx import OnnxBackend, export_onnx
from trainers.student.policies import StudentFollower, StudentLeader, TorchBackend
from trainers.student.realtime import RealtimeStudent

_HAS_NUMBA = importlib.util.find_spec("numba") is not None
if _HAS_NUMBA:  # the [realtime] extra
    from trainers.student.compiled import (
        CompiledStudent,
        follower_features,
        follower_network,
        leader_features,
        leader_network,
    )

TARGET_US = 100.0


def cell(n_ues: int, ttis: int) -> ScenarioConfig:
    return ScenarioConfig().with_ue_counts((n_ues,), episode_ttis=ttis)


def tti_seconds(leader, follower, game: StackelbergGame, episode: int, rng=None,
                on_tti=None) -> list[float]:
    """Seconds of each TTI decision (``leader.act`` + ``follower.act``) of one episode at B = 1;
    the simulator's steps are not timed, nor ``on_tti()``, called after each decision."""
    leader.reset(1, game.max_ues, game.n_rbgs, rng)
    follower.reset(1, game.max_ues, game.n_rbgs, game.ucm_levels, rng)
    obs, seconds = game.reset(episode), []
    while True:
        start = time.perf_counter()
        dcm = leader.act(obs)
        t_leader = time.perf_counter() - start
        follower_obs = game.step_leader(dcm)
        start = time.perf_counter()
        action = follower.act(follower_obs)
        seconds.append(t_leader + time.perf_counter() - start)
        if on_tti is not None:
            on_tti()
        step = game.step_followers(*action)
        if step.done:
            return seconds
        obs = step.leader_obs


def student_latency(model: StudentModel, backend, scenario: ScenarioConfig, episodes: int
                    ) -> tuple[list[float], list[float]]:
    """Seconds per TTI: (end to end, network only)."""
    leader, follower = StudentLeader(model, backend), StudentFollower(model, backend)
    game, total, network = StackelbergGame(scenario, 1), [], []

    def time_network() -> None:  # the forward passes alone, on this TTI's ready features
        last, ue_x = leader.last, follower.last["ue_x"]
        start = time.perf_counter()
        backend.leader(last["global_x"], last["ue_x"], last["mask"])
        backend.follower(ue_x)
        network.append(time.perf_counter() - start)

    for episode in range(episodes):
        total += tti_seconds(leader, follower, game, episode, on_tti=time_network)
    return total, network


def one_cell_latency(student, scenario: ScenarioConfig, episodes: int, on_tti=None,
                     one_call: bool = False) -> list[float]:
    """Seconds per TTI of a one-cell student (``leader(obs)`` then ``followers(obs)``:
    :class:`RealtimeStudent` or :class:`CompiledStudent`); ``on_tti(obs, follower_obs)`` runs
    untimed after each TTI's decisions. ``one_call``: :meth:`CompiledStudent.decide` instead,
    the whole TTI in one call; the UEs' view of the TTI (all but its DCM bits, which ``decide``
    computes) is read from the game before the call, untimed, and the game put back
    (``state_dict``); ``on_tti`` then gets that view."""
    game, total = StackelbergGame(scenario, 1), []
    nobody = np.zeros((1, game.n_rbgs), np.int64)
    for episode in range(episodes):
        student.reset()
        obs = game.reset(episode)
        while True:
            if one_call:
                before = game.state_dict()
                follower_obs = game.step_leader(nobody)
                game.load_state_dict(before)
                start = time.perf_counter()
                dcm, bitmap, ucm = student.decide(obs, follower_obs)
                total.append(time.perf_counter() - start)
                game.step_leader(dcm[None])
            else:
                start = time.perf_counter()
                dcm = student.leader(obs)
                t_leader = time.perf_counter() - start
                follower_obs = game.step_leader(dcm[None])
                start = time.perf_counter()
                bitmap, ucm = student.followers(follower_obs)
                total.append(t_leader + time.perf_counter() - start)
            if on_tti is not None:
                on_tti(obs, follower_obs)
            step = game.step_followers(bitmap[None], ucm[None])
            if step.done:
                break
            obs = step.leader_obs
    return total


def lean_latency(model: StudentModel, backend, scenario: ScenarioConfig, episodes: int
                 ) -> tuple[list[float], list[float]]:
    """Seconds per TTI of :class:`RealtimeStudent`: (end to end, features only)."""
    c = scenario.cell
    lean, features = RealtimeStudent(model, backend, c.max_ues), RealtimeStudent(
        model, backend, c.max_ues)
    feature = []

    def time_features(obs, follower_obs) -> None:  # the same TTI's features, on a twin
        if obs.t == 0:
            features.reset()
        start = time.perf_counter()
        features.leader_inputs(obs)
        features.grants = lean.grants
        features.follower_inputs(follower_obs)
        feature.append(time.perf_counter() - start)

    return one_cell_latency(lean, scenario, episodes, time_features), feature


def compiled_latency(directory: Path, scenario: ScenarioConfig, episodes: int
                     ) -> tuple[list[float], list[float], list[float]]:
    """Seconds per TTI of :class:`CompiledStudent`: (end to end, features, network). The parts
    are timed on a twin fed the same observations, its compiled kernels called one by one
    (each call's dispatch from Python included); the rest of the end-to-end time is glue."""
    max_ues = scenario.cell.max_ues
    compiled, twin = (CompiledStudent.load(directory, max_ues) for _ in range(2))
    features, network = [], []

    def time_parts(obs, ue_obs) -> None:
        if obs.t == 0:
            twin.reset()
        twin._set_capacity(obs)
        s, lw, fw = twin.state, twin.leader_weights, twin.follower_weights
        t0 = time.perf_counter()
        n_active = leader_features(s, obs.t, obs.active, obs.ucm, obs.csi, obs.served_rbgs,
                                   obs.queue_report, obs.rbg_outcome)
        t1 = time.perf_counter()
        leader_network(lw, s, obs.queue_report, obs.csi, n_active)
        t2 = time.perf_counter()
        follower_features(s, ue_obs.active, ue_obs.buffer_dpdus, ue_obs.channel,
                          ue_obs.dcm_bits, ue_obs.feedback, ue_obs.last_ucm)
        t3 = time.perf_counter()
        follower_network(fw, s, ue_obs.active)
        t4 = time.perf_counter()
        features.append(t1 - t0 + t3 - t2)
        network.append(t2 - t1 + t4 - t3)

    return one_cell_latency(compiled, scenario, episodes, time_parts), features, network


def fresh_tiny_policy(cache_dir: Path) -> Path:
    """A fresh Stackelberg policy on the offline tiny model (random Llama, LoRA r = 16 on the
    q/v projections), saved like a run's ``final/`` so it loads as trained adapters do."""
    from trl import ModelConfig

    from trainers.policy.models import StackelbergPolicy
    from trainers.policy.named_models import build_tiny_model
    from trainers.runs.hub import write_trainer_config
    from trainers.stackelberg.config import StackelbergPPOConfig

    _, tokenizer = build_tiny_model(cache_dir)
    mc = ModelConfig(model_name_or_path=tokenizer.name_or_path, dtype="float32", lora_r=16,
                     lora_alpha=32, lora_dropout=0.0, lora_target_modules=["q_proj", "v_proj"])
    config = StackelbergPPOConfig(report_to=[], output_dir=str(cache_dir / "bench-student-llm"))
    policy = StackelbergPolicy.from_model_config(mc, config)
    directory = Path(tempfile.mkdtemp(prefix="bench-student-llm-"))
    policy.save_adapters(directory)
    write_trainer_config(directory, config)
    return directory


def llm_latency(leader, follower, scenario: ScenarioConfig, ttis: int) -> float:
    """Median seconds per TTI of LLM adapters played as textgame policies (leader and
    followers of one env, B = 1): one warm-up episode, then three timed ones of ``ttis``."""
    data = scenario.to_dict()
    data["cell"]["episode_ttis"] = ttis
    game = StackelbergGame(ScenarioConfig.from_dict(data), 1)
    times = [sum(tti_seconds(leader, follower, game, episode, np.random.default_rng(episode)))
             / ttis for episode in range(4)]
    return statistics.median(times[1:])  # the first compiles grammars and fills the caches


def load_llm(spec: str, parser: argparse.ArgumentParser, cache_dir: Path):
    """(leader, follower) of ``--llm``: a fresh tiny-model policy for 'tiny', else saved
    adapters."""
    from trainers.policy.scheduler import load_llm_policies

    if spec == "tiny":
        return load_llm_policies(str(fresh_tiny_policy(cache_dir)))
    from trainers.runs.hub import HubError

    try:
        return load_llm_policies(spec, ues_as_trained=True)
    except (OSError, ValueError, HubError) as error:
        parser.error(f"--llm = {spec!r} is invalid; allowed: 'tiny' or saved Stackelberg PPO "
                     f"adapters (a run's final/ or a Hub id): {error}")


def summary(seconds: list[float]) -> tuple[float, float]:
    us = np.asarray(seconds) * 1e6
    return float(np.median(us)), float(np.percentile(us, 99))


def main(argv=None) -> str:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--student", type=Path, default=None,
                   help="student directory (default: a freshly initialised student)")
    p.add_argument("--ues", type=int, nargs="+", default=list(range(2, 11)))
    p.add_argument("--ttis", type=int, default=50, help="TTIs per timed episode")
    p.add_argument("--episodes", type=int, default=6, help="timed episodes per I")
    p.add_argument("--llm_ttis", type=int, default=4, help="TTIs per LLM episode (0 = skip)")
    p.add_argument("--llm", default="tiny",
                   help="the LLM policy of the ratio column: 'tiny' (a fresh policy on the "
                        "offline tiny model) or saved adapters, e.g. runs/smollm2-ppo-rr/final")
    p.add_argument("--cache_dir", type=Path,
                   default=Path(tempfile.gettempdir()) / "agentic-mac-tiny")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    if args.student is None:
        torch.manual_seed(0)
        model = StudentModel(CellShape.of(cell(2, args.ttis).cell), 2, 64, [64, 64])
        directory = Path(tempfile.mkdtemp(prefix="bench-student-"))
        export_onnx(model, model.save(directory))
    else:
        if not (args.student / CONFIG_FILE).is_file():
            p.error(f"--student = '{args.student}' is invalid; allowed: a student directory "
                    "written by agentic-mac distill (final/ or a checkpoint)")
        model, directory = StudentModel.load(args.student), args.student
        if not (directory / "leader.onnx").is_file():
            export_onnx(model, directory)
    backends = {"torch": TorchBackend(model), "onnx": OnnxBackend(directory)}
    llm_policy = load_llm(args.llm, p, args.cache_dir) if args.llm_ttis else None
    lines = ["| I | PyTorch median / p99 (us) | net only | onnxruntime median / p99 (us) | "
             "net only | lean onnxruntime median / p99 (us) | lean features | compiled median / "
             "p99 (us) | compiled features / network / glue | compiled one call median / p99 "
             "(us) | LLM (ms) | LLM / lean |",
             "|---:|" + "---:|" * 11]
    for n_ues in args.ues:
        scenario, row = cell(n_ues, args.ttis), []
        for backend in backends.values():
            total, network = student_latency(model, backend, scenario, args.episodes)
            row.append((summary(total), summary(network)))
        lean, lean_features = map(summary, lean_latency(model, backends["onnx"], scenario,
                                                        args.episodes))
        fast = parts = one_call = "- (no numba)"
        if _HAS_NUMBA:  # one cell of I_max = I slots, as the lean path
            total, features, network = (summary(x) for x in compiled_latency(
                directory, scenario, args.episodes))
            fast = f"{total[0]:.0f} / {total[1]:.0f}"
            parts = (f"{features[0]:.0f} / {network[0]:.0f} / "
                     f"{total[0] - features[0] - network[0]:.0f}")
            median, p99 = summary(one_cell_latency(
                CompiledStudent.load(directory, scenario.cell.max_ues), scenario, args.episodes,
                one_call=True))
            one_call = f"{median:.0f} / {p99:.0f}"
        llm = llm_latency(*llm_policy, scenario, args.llm_ttis) if args.llm_ttis else None
        (pt, pt_net), (ort, ort_net) = row
        ratio = f"{llm * 1e6 / lean[0]:.0f}x" if llm else "-"
        lines.append(f"| {n_ues} | {pt[0]:.0f} / {pt[1]:.0f} | {pt_net[0]:.0f} | "
                     f"{ort[0]:.0f} / {ort[1]:.0f} | {ort_net[0]:.0f} | "
                     f"{lean[0]:.0f} / {lean[1]:.0f} | {lean_features[0]:.0f} | {fast} | {parts} | "
                     f"{one_call} | "
                     f"{f'{llm * 1e3:.1f}' if llm else '-'} | {ratio} |")
        print(lines[-1], flush=True)
    table = "\n".join(lines)
    print(f"\n{table}\n\nLLM: {args.llm}; load average (1, 5, 15 min): {os.getloadavg()}\n"
          f"target: median <= {TARGET_US / 2:.0f} us and p99 <= {TARGET_US:.0f} us per TTI at "
          f"I = 10 on one core, <= {TARGET_US / 4:.0f} us at I = 2")
    return table


if __name__ == "__main__":
    main()
