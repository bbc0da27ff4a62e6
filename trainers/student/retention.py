"""How much of its teacher a student keeps: leader utility and throughput per I (Fig. 14).

Student and teacher play the same environments (common random numbers,
:func:`textgame.runner.run_episodes` with one seed), one scenario per UE count; retention is
the student's mean over the teacher's.
"""

from __future__ import annotations

from collections.abc import Sequence

from textgame.config import ScenarioConfig
from textgame.metrics import means
from textgame.runner import run_episodes

RETAINED = ("leader_utility", "throughput_mbps")


def retention_table(scenario: ScenarioConfig, student: tuple, teacher: tuple,
                    ues: Sequence[int], episodes: int, seed: int,
                    baseline: tuple | None = None, records: list | None = None) -> list[dict]:
    """One row per I: the retained KPIs of student and teacher and their ratios; with a
    ``baseline`` (the undistilled student) also its KPIs and ratios (``baseline_*``).
    ``records`` (a list) receives every episode: ``({"ues", "player", "seed"}, KPI arrays)``
    per (I, player), for :func:`textgame.metrics.episodes_csv`."""
    rows = []
    players = {"teacher": teacher, "student": student}
    if baseline is not None:
        players["baseline"] = baseline
    for n_ues in ues:
        case = scenario.with_ue_counts((n_ues,))
        kpis = {}
        for name, (leader, follower) in players.items():
            result = run_episodes(case, leader, follower, episodes, min(episodes, 64), seed)
            kpis[name] = means(result)
            if records is not None:
                records.append(({"ues": n_ues, "player": name, "seed": seed}, result))
        theirs, row = kpis["teacher"], {"ues": n_ues}
        for name in [n for n in players if n != "teacher"]:
            mine = kpis[name]
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
