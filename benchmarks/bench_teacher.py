"""How fast an ``llm:`` teacher labels DAgger states: one cell at a time against batched TTIs.

    python benchmarks/bench_teacher.py                                   # fresh tiny policy
    python benchmarks/bench_teacher.py --teacher llm:runs/main-s0/final --envs 1 8 32 --threads 2

Distillation (:func:`trainers.student.rollout.collect`) asks its teacher for the leader's DCM of
every env of a TTI in one call and for the actions of every active UE of every env in a second
(:class:`~trainers.policy.scheduler.LLMLeader`/:class:`~trainers.policy.scheduler.LLMFollower`:
one PAG-constrained batch, the meta-prompts' KV states computed once and reused,
:class:`~trainers.policy.prefix_cache.PrefixCache`). This benchmark plays that labelling alone -
the teacher's own actions executed, the simulator untimed - on B envs of a cell with I UEs, for
each B of ``--envs``, after one warm-up TTI slice (grammars compiled, prefixes cached), and prints
labelled decisions per second (the leader's and every active UE's), cell-TTIs per second and
the ratio to B = 1, the one-state-at-a-time labelling (one leader call and one call for its UEs
per cell and TTI). Batches of every size play the same first B cells of the same seed.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from textgame.config import ScenarioConfig
from textgame.game import StackelbergGame

DEFAULT_ENVS = (1, 8, 32)


def label_rate(teacher, scenario: ScenarioConfig, n_envs: int, ttis: int,
               seed: int = 0) -> tuple[float, float]:
    """(decisions per second, cell-TTIs per second) of ``teacher`` labelling ``ttis`` TTIs of
    ``n_envs`` envs after one warm-up TTI; only the teacher's calls are timed."""
    cell = scenario.cell
    game = StackelbergGame(scenario, n_envs)
    rng = np.random.default_rng(seed)
    teacher.leader.reset(n_envs, cell.max_ues, cell.n_rbgs, rng)
    teacher.follower.reset(n_envs, cell.max_ues, cell.n_rbgs, cell.ucm_levels, rng)
    obs, seconds, decisions = game.reset(seed), 0.0, 0
    for tti in range(ttis + 1):
        start = time.perf_counter()
        dcm = teacher.leader.act(obs)
        leader_s = time.perf_counter() - start
        follower_obs = game.step_leader(dcm)
        start = time.perf_counter()
        action = teacher.follower.act(follower_obs)
        if tti:  # the first TTI compiles the grammars and fills the prefix cache
            seconds += leader_s + time.perf_counter() - start
            decisions += n_envs + int(follower_obs.active.sum())
        step = game.step_followers(*action)
        if step.done:
            obs = game.reset(seed + tti + 1)
        else:
            obs = step.leader_obs
    return decisions / seconds, n_envs * ttis / seconds


def fresh_teacher_spec(cache_dir: Path) -> str:
    """``llm:DIR`` of a fresh policy on the offline tiny model (bench_student's, loaded from
    its file: benchmarks/ is no package)."""
    path = Path(__file__).with_name("bench_student.py")
    spec = importlib.util.spec_from_file_location("bench_student", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return f"llm:{module.fresh_tiny_policy(cache_dir)}"


def main(argv=None) -> str:
    from trainers.specs import SpecError
    from trainers.student.teachers import build_teacher

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--teacher", default="tiny",
                   help="'tiny' (a fresh policy on the offline tiny model) or llm:DIR_OR_REPO")
    p.add_argument("--envs", type=int, nargs="+", default=list(DEFAULT_ENVS),
                   help="B: envs labelled per TTI slice (1 = one cell at a time)")
    p.add_argument("--ues", type=int, default=5, help="I: active UEs per cell")
    p.add_argument("--rbgs", type=int, default=4, help="N: RBGs")
    p.add_argument("--ttis", type=int, default=4, help="timed TTIs per B")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--cache_dir", type=Path,
                   default=Path(tempfile.gettempdir()) / "agentic-mac-bench")
    args = p.parse_args(argv)
    for name, value in (("--envs", min(args.envs)), ("--ues", args.ues), ("--rbgs", args.rbgs),
                        ("--ttis", args.ttis), ("--threads", args.threads)):
        if value < 1:
            p.error(f"{name} = {value} is invalid; allowed: integers >= 1")
    torch.set_num_threads(args.threads)
    spec = fresh_teacher_spec(args.cache_dir) if args.teacher == "tiny" else args.teacher
    scenario = ScenarioConfig.from_dict({"cell": {"ue_counts": [args.ues], "n_rbgs": args.rbgs,
                                                  "episode_ttis": args.ttis + 1}})
    try:
        teacher = build_teacher(spec, scenario.cell)
    except SpecError as error:
        p.error(f"--teacher = {args.teacher!r} is invalid; allowed: 'tiny' or llm:DIR_OR_REPO "
                f"({error})")
    rates = {b: label_rate(teacher, scenario, b, args.ttis) for b in args.envs}
    one = rates.get(1)
    lines = ["| B (envs per TTI slice) | decisions / s | cell-TTIs / s | vs B = 1 |",
             "|---:|---:|---:|---:|"]
    for b, (decisions, ttis) in rates.items():
        ratio = f"{decisions / one[0]:.1f}x" if one else "-"
        lines.append(f"| {b} | {decisions:.2f} | {ttis:.3f} | {ratio} |")
    table = "\n".join(lines)
    print(f"{table}\n\nteacher: {args.teacher}; I = {args.ues}, N = {args.rbgs}, "
          f"{args.ttis} timed TTIs per B, {args.threads} torch thread(s); "
          f"load average (1, 5, 15 min): {os.getloadavg()}")
    return table


if __name__ == "__main__":
    main()
