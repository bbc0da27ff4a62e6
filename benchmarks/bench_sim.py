"""Simulator throughput: UE-TTI steps per second of the numeric game under the random policy.

    python benchmarks/bench_sim.py                 # B in {1, 64, 1024}, I = 5, N = 4, one core
    python benchmarks/bench_sim.py --envs 4096 --ues 10 --rbgs 8 --json
    python benchmarks/bench_sim.py --network-cells 4 16 64 --partitions equal proportional

A step is one active UE for one TTI, counted over whole episodes (T = 50) including the policies'
decisions, the game's bookkeeping (utilities, observations) and KPI accumulation. The process is
pinned to one core and BLAS to one thread. Target: >= 1,000,000 UE-TTI/s at B = 1024.

The network case (paper Table IV, :mod:`textgame.network`) runs B networks of C cells with
B * C = ``--network-total`` (1024) cells, Max-Weight DBSs and Dictator UEs; a step is one UE of
the network for one TTI (an edge UE counts once). Target: >= 1,000,000 UE-TTI/s.
"UE-TTI / CPU s" divides by the process's CPU time: on a shared machine it is the steadier figure.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

from textgame.config import ScenarioConfig  # noqa: E402
from textgame.game import StackelbergGame  # noqa: E402
from textgame.metrics import EpisodeKPIs  # noqa: E402
from textgame.network import NetworkGame  # noqa: E402
from textgame.network_config import NetworkConfig  # noqa: E402
from textgame.network_metrics import NetworkKPIs, play_network  # noqa: E402
from textgame.policies import RandomFollower, RandomLeader, make_follower, make_leader  # noqa: E402


def time_episodes(n_envs: int, n_ues: int, n_rbgs: int, min_seconds: float, seed: int) -> dict:
    scenario = ScenarioConfig().with_ue_counts((n_ues,), n_rbgs=n_rbgs)
    game = StackelbergGame(scenario, n_envs)
    kpis = EpisodeKPIs(scenario.cell, n_envs)
    leader, follower = RandomLeader(), RandomFollower()
    rng = np.random.default_rng(seed)
    steps, episodes, start, cpu = 0, 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - start < min_seconds or episodes < 2:
        leader.reset(n_envs, n_ues, n_rbgs, rng)
        follower.reset(n_envs, n_ues, n_rbgs, scenario.cell.ucm_levels, rng)
        kpis.reset()
        obs = game.reset(seed + episodes)
        while True:
            step = game.step_followers(*follower.act(game.step_leader(leader.act(obs))))
            kpis.update(step)
            steps += int(step.report.active.sum())
            if step.done:
                break
            obs = step.leader_obs
        kpis.result()
        episodes += 1
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    return {"B": n_envs, "I": n_ues, "N": n_rbgs, "episodes": episodes * n_envs,
            "seconds": seconds, "ue_tti_per_s": steps / seconds, "ue_tti_per_cpu_s": steps / cpu,
            "ms_per_tti": 1000 * seconds / (episodes * scenario.cell.episode_ttis)}


def time_network(n_cells: int, total_cells: int, partition: str, min_seconds: float,
                 seed: int) -> dict:
    config = NetworkConfig(n_cells=n_cells, partition=partition)
    game = NetworkGame(config, max(total_cells // n_cells, 1))
    kpis = NetworkKPIs(game)
    leader, follower = make_leader("max_weight", config.scenario.cell), make_follower("dictator")
    episodes, start, cpu = 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - start < min_seconds or episodes < 2:
        play_network(game, leader, follower, seed + episodes, seed, kpis).result()
        episodes += 1
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    ttis = episodes * config.scenario.cell.episode_ttis
    return {"C": n_cells, "B": game.n_networks, "partition": partition, "U": game.n_ues,
            "episodes": episodes * game.n_networks, "seconds": seconds,
            "ue_tti_per_s": ttis * game.n_networks * game.n_ues / seconds,
            "ue_tti_per_cpu_s": ttis * game.n_networks * game.n_ues / cpu,
            "ms_per_tti": 1000 * seconds / ttis}


def print_network(rows: list[dict]) -> None:
    print("\n# network: Max-Weight DBSs, Dictator UEs, B * C cells\n"
          "| C | B | partition | UEs / network | ms / TTI | UE-TTI / s | UE-TTI / CPU s |\n"
          "|---:|---:|---|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['C']} | {r['B']} | {r['partition']} | {r['U']} | {r['ms_per_tti']:.3f} | "
              f"{r['ue_tti_per_s']:,.0f} | {r['ue_tti_per_cpu_s']:,.0f} |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--envs", type=int, nargs="+", default=[1, 64, 1024])
    p.add_argument("--ues", type=int, default=5)
    p.add_argument("--rbgs", type=int, default=4)
    p.add_argument("--seconds", type=float, default=3.0, help="minimum timed seconds per B")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--network-cells", type=int, nargs="*", default=[16],
                   help="C of the network case (none: skip it)")
    p.add_argument("--network-total", type=int, default=1024, help="B * C cells")
    p.add_argument("--partitions", nargs="+", default=["equal", "proportional", "random"])
    p.add_argument("--json", action="store_true", help="print JSON lines instead of a table")
    args = p.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    rows = [time_episodes(b, args.ues, args.rbgs, args.seconds, args.seed) for b in args.envs]
    network = [time_network(c, args.network_total, part, args.seconds, args.seed)
               for c in args.network_cells for part in args.partitions]
    if args.json:
        for row in rows + network:
            print(json.dumps(row))
        return
    print(f"# bench_sim: random policy, one core, {platform.processor() or platform.machine()}, "
          f"numpy {np.__version__}")
    print("| B | I | N | episodes | ms / TTI | UE-TTI / s | UE-TTI / CPU s |\n"
          "|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['B']} | {r['I']} | {r['N']} | {r['episodes']} | {r['ms_per_tti']:.3f} | "
              f"{r['ue_tti_per_s']:,.0f} | {r['ue_tti_per_cpu_s']:,.0f} |")
    if network:
        print_network(network)


if __name__ == "__main__":
    main()
