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


def mean_kpis(scenario: ScenarioConfig, leader: LeaderPolicy, follower: FollowerPolicy,
              episodes: int, seed: int) -> dict[str, float]:
    result = run_episodes(scenario, leader, follower, episodes, min(episodes, 64), seed)
    return {k: s.mean for k, s in summarize([result]).items()}


def retention_table(scenario: ScenarioConfig, student: tuple, teacher: tuple,
                    ues: Sequence[int], episodes: int, seed: int,
                    baseline: tuple | None = None) -> list[dict]:
    """One row per I: the retained KPIs of student and teacher and their ratios; with a
    ``baseline`` (the undistilled student) also its KPIs and ratios (``baseline_*``)."""
    rows = []
    for n_ues in ues:
        case = scenario.with_ue_counts((n_ues,))
        theirs = mean_kpis(case, *teacher, episodes, seed)
        row: dict = {"ues": n_ues}
        players = {"student": student} if baseline is None else {"student": student,
                                                                 "baseline": baseline}
        for name, pair in players.items():
            mine = mean_kpis(case, *pair, episodes, seed)
            prefix = "" if name == "student" else "baseline_"
            for kpi in RETAINED:
                row[f"{name}_{kpi}"], row[f"teacher_{kpi}"] = mine[kpi], theirs[kpi]
                row[f"{prefix}{kpi}_retention"] = (mine[kpi] / theirs[kpi] if theirs[kpi]
                                                   else float("nan"))
        rows.append(row)
    return rows


def markdown(rows: list[dict]) -> str:
    """The retention table; a PPO baseline adds its KPI and retention after the student's."""
    with_baseline = "baseline_leader_utility" in rows[0]
    names = ("student", "baseline", "teacher") if with_baseline else ("student", "teacher")
    players, ratio = " / ".join(names), " (student, baseline)" * with_baseline
    head = (f"| I | leader utility {players} | retention{ratio} | throughput (Mbps) {players} "
            f"| retention{ratio} |\n|---:|---:|---:|---:|---:|\n")
    lines = []
    for r in rows:
        cells = [str(r["ues"])]
        for kpi in RETAINED:
            cells.append(" / ".join(f"{r[f'{n}_{kpi}']:.4f}" for n in names))
            ratios = [r[f"{kpi}_retention"]] + ([r[f"baseline_{kpi}_retention"]]
                                                 if with_baseline else [])
            cells.append(", ".join(f"{x:.1%}" for x in ratios))
        lines.append("| " + " | ".join(cells) + " |")
    return head + "\n".join(lines) + "\n"
