"""How much of its teacher a student keeps: leader utility and throughput per I (Fig. 14).

Student and teacher play the same environments (common random numbers,
:func:`textgame.runner.run_episodes` with one seed), one scenario per UE count; retention is
the student's mean over the teacher's.
"""

from __future__ import annotations

from collections.abc import Sequence

from textgame.config import ScenarioConfig
from textgame.metrics import summarize
from textgame.policies import FollowerPolicy, LeaderPolicy
from textgame.runner import run_episodes

RETAINED = ("leader_utility", "throughput_mbps")


def with_ues(scenario: ScenarioConfig, n_ues: int) -> ScenarioConfig:
    data = scenario.to_dict()
    data["cell"].update(ue_counts=[n_ues], ue_probs=None, max_ues=None)
    return ScenarioConfig.from_dict(data)


def mean_kpis(scenario: ScenarioConfig, leader: LeaderPolicy, follower: FollowerPolicy,
              episodes: int, seed: int) -> dict[str, float]:
    result = run_episodes(scenario, leader, follower, episodes, min(episodes, 64), seed)
    return {k: s.mean for k, s in summarize([result]).items()}


def retention_table(scenario: ScenarioConfig, student: tuple, teacher: tuple,
                    ues: Sequence[int], episodes: int, seed: int) -> list[dict]:
    """One row per I: the retained KPIs of student and teacher and their ratios."""
    rows = []
    for n_ues in ues:
        case = with_ues(scenario, n_ues)
        mine = mean_kpis(case, *student, episodes, seed)
        theirs = mean_kpis(case, *teacher, episodes, seed)
        row: dict = {"ues": n_ues}
        for kpi in RETAINED:
            row[f"student_{kpi}"], row[f"teacher_{kpi}"] = mine[kpi], theirs[kpi]
            row[f"{kpi}_retention"] = mine[kpi] / theirs[kpi] if theirs[kpi] else float("nan")
        rows.append(row)
    return rows


def markdown(rows: list[dict]) -> str:
    head = ("| I | leader utility student / teacher | retention | throughput (Mbps) student / "
            "teacher | retention |\n|---:|---:|---:|---:|---:|")
    lines = [head]
    for r in rows:
        lines.append(
            f"| {r['ues']} | {r['student_leader_utility']:.4f} / "
            f"{r['teacher_leader_utility']:.4f} | {r['leader_utility_retention']:.1%} | "
            f"{r['student_throughput_mbps']:.4f} / {r['teacher_throughput_mbps']:.4f} | "
            f"{r['throughput_mbps_retention']:.1%} |")
    return "\n".join(lines) + "\n"
