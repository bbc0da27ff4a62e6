"""Tables and figures of an evaluation (recipes/evaluate.py): markdown, CSV and matplotlib PNGs.

A *row* is one (policy, case) result: ``{"policy", "suite", "case", "x", "kpis"}`` with ``kpis``
mapping every KPI to a :class:`textgame.metrics.Summary` (mean and 95 % CI over episodes).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

from textgame.tables import kpi_csv, kpi_table

TABLE_KPIS = ("throughput_mbps", "fairness", "resource_efficiency", "packet_success_rate",
              "latency_mean", "latency_p95", "buffer_mean", "buffer_max", "collision_rate",
              "leader_utility")
SWEEPS = {"ues": "UEs I", "ues14": "UEs I", "rbgs": "RBGs N", "tbler": "TBLER"}  # curves
CURVE_KPIS = {"throughput_mbps": "throughput (Mbps per UE)", "fairness": "Jain fairness"}
TRAINING_KEYS = ("leader_utility", "follower_utility", "throughput_mbps", "fairness")


def markdown(rows: Sequence[Mapping], kpis: Sequence[str] = TABLE_KPIS,
             training_sizes: Sequence[int] = ()) -> str:
    """One table per suite, rows grouped by case then policy; with ``training_sizes`` the UE
    sweeps get two, the cell sizes trained on and the held-out ones."""
    out = []
    for suite in dict.fromkeys(r["suite"] for r in rows):
        mine = [r for r in rows if r["suite"] == suite]
        if training_sizes and suite in ("ues", "ues14"):
            seen = {int(n) for n in training_sizes}
            for title, part in ((f"training sizes I in {sorted(seen)}",
                                 [r for r in mine if int(float(r["x"])) in seen]),
                                ("held-out sizes", [r for r in mine
                                                    if int(float(r["x"])) not in seen])):
                if part:
                    out += [f"### {suite}: {title}", "", kpi_table(part, kpis,
                                                                  ("case", "policy"))]
            continue
        out += [f"### {suite}", "", kpi_table(mine, kpis, ("case", "policy"))]
    return "\n".join(out)


PAIRED_KPIS = ("throughput_mbps", "fairness", "collision_rate", "leader_utility")


def paired_rows(results: Mapping[tuple, Mapping], cases: Sequence, labels: Sequence[str],
                reference: str, seeds: int) -> list[dict]:
    """Rows of each policy's per-episode difference to the policy ``reference`` on the same
    episodes (common random numbers), pooled over ``seeds``: ``results[case, policy, seed]``
    maps a KPI to its (episodes,) array; the row's policy reads "A - reference"."""
    from textgame.metrics import paired_difference

    ref = labels.index(reference)
    rows = []
    for c, case in enumerate(cases):
        for s, label in enumerate(labels):
            if s == ref:
                continue
            kpis = {}
            for kpi in results[c, s, 0]:
                values = [v for k in range(seeds) for v in results[c, s, k][kpi]]
                base = [v for k in range(seeds) for v in results[c, ref, k][kpi]]
                kpis[kpi] = paired_difference(values, base)
            rows.append({"policy": f"{label} - {reference}", "suite": case.suite,
                         "case": case.label, "x": case.x, "kpis": kpis})
    return rows


def episode_groups(results: Mapping[tuple, Mapping], cases: Sequence, labels: Sequence[str],
                   first_seed: int) -> list[tuple[dict, Mapping]]:
    """Every (case, policy, seed) result with its labels (suite, case, x, policy, seed), for
    :func:`textgame.metrics.episodes_csv`."""
    return [({"suite": cases[c].suite, "case": cases[c].label, "x": cases[c].x,
              "policy": labels[s], "seed": first_seed + k}, values)
            for (c, s, k), values in sorted(results.items())]


def to_csv(rows: Sequence[Mapping]) -> str:
    """Every KPI's mean, CI half-width and episode count, one line per (policy, case)."""
    return kpi_csv(rows, ("suite", "case", "x", "policy"))


def read_csv(path: str | Path) -> list[dict]:
    """The rows of a ``results.csv`` (:func:`to_csv`), KPIs as Summaries (std from the CI)."""
    import csv

    from textgame.metrics import Summary, t_quantile_975

    rows = []
    with open(path, newline="") as handle:
        for record in csv.DictReader(handle):
            kpis = {}
            for name in (k[:-5] for k in record if k.endswith("_mean")):
                mean, ci95 = record[f"{name}_mean"], record.get(f"{name}_ci95", "")
                if mean == "":
                    continue
                n = int(record.get(f"{name}_n") or 0)
                ci = float(ci95) if ci95 != "" else math.nan
                std = ci * math.sqrt(n) / t_quantile_975(n - 1) if n > 1 else math.nan
                kpis[name] = Summary(float(mean), std, n, ci) if n else float(mean)
            rows.append({"policy": record["policy"], "suite": record["suite"],
                         "case": record["case"], "x": record["x"], "kpis": kpis})
    return rows


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on servers and CI
    import matplotlib.pyplot as plt

    return plt


def _save(plt, fig, path: str | Path) -> Path:
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def line_style(k: int) -> dict:
    """Matplotlib style of the k-th line: ten colours, then the next marker and dash pattern,
    so lines past the tenth do not repeat an earlier line's look."""
    return {"color": f"C{k % 10}", "marker": "osD^v"[k // 10 % 5],
            "linestyle": ("-", "--", ":")[k // 10 % 3]}


def plot_sweep(rows: Sequence[Mapping], suite: str, path: str | Path,
               training_sizes: Sequence[int] = ()) -> Path:
    """Throughput and fairness against the suite's axis, one line per policy, its 95 % CI
    shaded; ``training_sizes`` (UE sweeps) are marked by grey bands."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(CURVE_KPIS), figsize=(5.0 * len(CURVE_KPIS) + 2.0, 3.6))
    policies = list(dict.fromkeys(r["policy"] for r in rows if r["suite"] == suite))
    for ax, (kpi, title) in zip(axes, CURVE_KPIS.items(), strict=True):
        for k, policy in enumerate(policies):
            points = [r for r in rows if r["suite"] == suite and r["policy"] == policy]
            x = [float(r["x"]) for r in points]
            mean = [r["kpis"][kpi].mean for r in points]
            ci = [0.0 if math.isnan(r["kpis"][kpi].ci95) else r["kpis"][kpi].ci95
                  for r in points]
            style = line_style(k)
            ax.plot(x, mean, markersize=4, label=policy, **style)
            ax.fill_between(x, [m - c for m, c in zip(mean, ci, strict=True)],
                            [m + c for m, c in zip(mean, ci, strict=True)],
                            color=style["color"], alpha=0.12, linewidth=0)
        for n in training_sizes if suite in ("ues", "ues14") else ():
            ax.axvspan(n - 0.3, n + 0.3, color="0.85", zorder=0)
        ax.set_xlabel(SWEEPS[suite] + (" (grey: training sizes)" if training_sizes
                                       and suite in ("ues", "ues14") else ""))
        ax.set_ylabel(title)
        ax.grid(alpha=0.3)
    axes[-1].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0))  # beside the data
    return _save(plt, fig, path)


def read_metrics(run_dir: str | Path) -> list[dict]:
    """The per-epoch records of a training run's ``metrics.jsonl``."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        raise ValueError(f"training run {run_dir}: no metrics.jsonl in it")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


LEARNING_CURVE = (("leader utility", ("leader_utility",)),
                  ("throughput (Mbps per UE)", ("throughput_mbps",)),
                  ("Jain fairness", ("fairness",)),
                  ("KL to the reference (per decision)", ("leader/kl_loss", "follower/kl_loss")),
                  ("explained variance", ("leader/explained_variance",
                                          "follower/explained_variance")))


def plot_learning_curve(history: Sequence[Mapping], path: str | Path) -> Path:
    """One run's epochs (its ``metrics.jsonl`` records): leader utility, throughput, JFI, each
    role's KL to the reference and its critic's explained variance, one panel each."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(LEARNING_CURVE), figsize=(3.6 * len(LEARNING_CURVE), 3.2))
    for ax, (title, keys) in zip(axes, LEARNING_CURVE, strict=True):
        for key in keys:
            points = [(r["epoch"], r[key]) for r in history
                      if r.get(key) is not None and not math.isnan(r[key])]
            if points:
                ax.plot(*zip(*points, strict=True), marker=".", label=key.split("/")[0])
        if len(keys) > 1:
            ax.legend(fontsize=7)
        ax.set_xlabel("epoch")
        ax.set_title(title, fontsize=9)
        ax.grid(alpha=0.3)
    return _save(plt, fig, path)


def plot_training(runs: Mapping[str, str | Path], path: str | Path) -> Path:
    """Learning curves of one or more runs: each key of TRAINING_KEYS the runs logged."""
    plt = _pyplot()
    histories = {label: read_metrics(d) for label, d in runs.items()}
    keys = [k for k in TRAINING_KEYS if any(k in h[0] for h in histories.values() if h)]
    if not keys:
        raise ValueError(f"training runs {list(runs)} logged none of {list(TRAINING_KEYS)}")
    fig, axes = plt.subplots(1, len(keys), figsize=(4.2 * len(keys), 3.4), squeeze=False)
    for ax, key in zip(axes[0], keys, strict=True):
        for label, history in histories.items():
            points = [(r.get("epoch", i + 1), r[key]) for i, r in enumerate(history) if key in r]
            if points:
                ax.plot(*zip(*points, strict=True), label=label)
        ax.set_xlabel("epoch")
        ax.set_ylabel(key.replace("_", " "))
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    return _save(plt, fig, path)
