"""Run leader/follower policy pairs on scenarios: one KPI row per (pair, UE count, RBG count).

The library side of ``agentic-mac simulate`` (numpy only): each row is the mean of every KPI over
all episodes of all seeds with the half-width of its 95 % confidence interval; the command
renders the rows with :mod:`textgame.tables`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from textgame.config import ScenarioConfig, replace_checked
from textgame.metrics import summarize
from textgame.policies import FollowerPolicy, LeaderPolicy
from textgame.runner import run_episodes

DEFAULT_TABLE_KPIS = ("throughput_mbps", "fairness", "resource_efficiency",
                      "packet_success_rate", "latency_mean", "latency_p95", "collision_rate",
                      "leader_utility", "follower_utility")
# (leader label, follower label, scenario -> fresh (leader, follower) policies)
Pair = tuple[str, str, Callable[[ScenarioConfig], tuple[LeaderPolicy, FollowerPolicy]]]


def pair_policies(leaders: Sequence[str], followers: Sequence[str]) -> list[tuple[str, str]]:
    if len(leaders) != len(followers) and 1 not in (len(leaders), len(followers)):
        raise ValueError(f"--leader has {len(leaders)} values and --followers {len(followers)}; "
                         "allowed: equal lengths, or one of them a single value")
    n = max(len(leaders), len(followers))
    return [(leaders[k % len(leaders)], followers[k % len(followers)]) for k in range(n)]


def scenarios(base: ScenarioConfig, ues, rbgs, tbler) -> list[tuple[ScenarioConfig, str, int]]:
    """(scenario, UE label, N) for every requested UE count and RBG count."""
    cell = base.cell if tbler is None else replace_checked(base.cell, tbler=tbler)
    out = []
    for n in rbgs or [cell.n_rbgs]:
        for i in ues or [None]:
            row = (replace_checked(cell, n_rbgs=n) if i is None
                   else cell.with_ue_counts((i,), n_rbgs=n))
            label = str(i) if i is not None else "/".join(map(str, cell.ue_counts))
            out.append((ScenarioConfig(row, base.traffic, base.channel, base.reward), label, n))
    return out


def simulate(base: ScenarioConfig, pairs: Sequence[Pair], *, ues=None, rbgs=None, tbler=None,
             episodes: int = 200, seeds: int = 1, seed: int = 0, n_envs: int = 256,
             on_batch: Callable[[int], None] | None = None) -> list[dict]:
    """``{"leader", "followers", "ues", "rbgs", "kpis", "episodes"}`` rows: every pair on every
    scenario of :func:`scenarios`, ``seeds`` independent seeds of ``episodes`` each, pooled in
    ``kpis``; ``episodes`` keeps each seed's per-episode KPI arrays (seed -> KPI -> (episodes,))."""
    rows = []
    for scenario, ue_label, n in scenarios(base, ues, rbgs, tbler):
        for leader, follower, make in pairs:
            batches = {}
            for k in range(seeds):
                lead, follow = make(scenario)
                batches[seed + k] = run_episodes(scenario, lead, follow, episodes, n_envs,
                                                 seed=seed + k, on_batch=on_batch)
            rows.append({"leader": leader, "followers": follower, "ues": ue_label, "rbgs": n,
                         "kpis": summarize(list(batches.values())), "episodes": batches})
    return rows


def episode_groups(rows: Sequence[dict]) -> list[tuple[dict, dict]]:
    """Every episode batch of :func:`simulate`'s rows with its labels (pair, I, N, seed), for
    :func:`textgame.metrics.episodes_csv`."""
    return [({"leader": row["leader"], "followers": row["followers"], "ues": row["ues"],
              "rbgs": row["rbgs"], "seed": seed}, batch)
            for row in rows for seed, batch in row["episodes"].items()]
