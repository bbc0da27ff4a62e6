"""Key performance indicators (design §2): per episode, then aggregated with 95 % CIs.

:class:`EpisodeKPIs` accumulates a batch of B lock-step episodes from :class:`GameStep` results and
returns one value per KPI and environment. :func:`summarize` pools episodes (from any number of
batches and seeds) into mean, standard deviation, count and the half-width of a Student-t 95 % CI.
A KPI that is undefined for an episode (e.g. latency when nothing was received) is NaN there and is
left out of its aggregate.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

from textgame.config import CellConfig
from textgame.game import GameStep
from textgame.simulator import COLLISION, ERASURE, IDLE
from textgame.utilities import jain_index

KPI_DESCRIPTIONS: dict[str, str] = {
    "throughput_mbps": "delivered bits per active UE per second, Mbps (eq. 23)",
    "fairness": "Jain's index of per-UE delivered bits over the episode",
    "resource_efficiency": "received dPDUs / RBG attempts (eq. 24)",
    "packet_success_rate": "successful RBG transmissions / attempts",
    "latency_mean": "mean dPDU latency, TTIs",
    "latency_p95": "95th percentile dPDU latency (nearest rank), TTIs",
    "buffer_mean": "mean buffer occupancy per active UE, dPDUs",
    "buffer_max": "largest buffer occupancy, dPDUs",
    "collision_rate": "fraction of RBG-TTIs with a collision",
    "idle_rbg_rate": "fraction of RBG-TTIs nobody used",
    "erasure_rate": "fraction of RBG-TTIs lost to a TBLER erasure",
    "drop_rate": "dPDUs refused by a full buffer / dPDUs arrived",
    "invalid_action_rate": "actions replaced by the no-op / actions taken",
    "leader_utility": "mean F_b,t over TTIs (eq. 5)",
    "follower_utility": "mean F_i,t over active UE-TTIs (eq. 2)",
}
KPIS = tuple(KPI_DESCRIPTIONS)


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    safe = np.where(denominator > 0, denominator, 1)
    return np.where(denominator > 0, numerator / safe, np.nan)


class EpisodeKPIs:
    """Accumulates the KPIs of B lock-step episodes; call :meth:`update` once per TTI."""

    def __init__(self, cell: CellConfig, n_envs: int) -> None:
        self.cell, self.n_envs, self.max_ues = cell, n_envs, cell.max_ues
        self.reset()

    def reset(self) -> None:
        b, i = self.n_envs, self.max_ues
        self.ttis = 0
        self.delivered = np.zeros((b, i))  # bits per UE
        self.ever_active = np.zeros((b, i), dtype=bool)
        self.active_ue_ttis = np.zeros(b)
        self.counts = {k: np.zeros(b) for k in (
            "completed", "attempts", "successes", "collisions", "idle", "erasures", "arrived",
            "dropped", "invalid", "actions", "leader_utility", "follower_utility", "buffer_sum")}
        self.buffer_max = np.zeros(b)
        # latency histogram: a dPDU can wait at most T - 1 TTIs within an episode
        self.latency_hist = np.zeros((b, self.cell.episode_ttis), dtype=np.int64)

    def state_dict(self) -> dict:
        """The running totals, for an exact resume mid-episode."""
        return {"ttis": self.ttis, "delivered": self.delivered.copy(),
                "ever_active": self.ever_active.copy(),
                "active_ue_ttis": self.active_ue_ttis.copy(),
                "counts": {k: v.copy() for k, v in self.counts.items()},
                "buffer_max": self.buffer_max.copy(), "latency_hist": self.latency_hist.copy()}

    def load_state_dict(self, state: dict) -> None:
        self.ttis = int(state["ttis"])
        for k in ("delivered", "ever_active", "active_ue_ttis", "buffer_max", "latency_hist"):
            setattr(self, k, np.array(state[k], copy=True))
        self.counts = {k: np.array(v, copy=True) for k, v in state["counts"].items()}

    def update(self, step: GameStep) -> None:
        r, c = step.report, self.counts
        active = r.active
        n_active = active.sum(axis=1)
        self.ttis += 1
        self.delivered += r.delivered_bits
        self.ever_active |= active
        self.active_ue_ttis += n_active
        c["completed"] += r.completed_dpdus.sum(axis=1)
        c["attempts"] += r.attempts.sum(axis=1)
        c["successes"] += r.successes.sum(axis=1)
        c["collisions"] += (r.rbg_outcome == COLLISION).sum(axis=1)
        c["idle"] += (r.rbg_outcome == IDLE).sum(axis=1)
        c["erasures"] += (r.rbg_outcome == ERASURE).sum(axis=1)
        c["arrived"] += r.arrived_dpdus.sum(axis=1)
        c["dropped"] += r.dropped_dpdus.sum(axis=1)
        c["invalid"] += step.invalid_leader + step.invalid_followers.sum(axis=1)
        c["actions"] += 1 + n_active
        c["leader_utility"] += step.leader_reward
        c["follower_utility"] += step.follower_reward.sum(axis=1)
        buffer = np.where(active, r.buffer_dpdus, 0)
        c["buffer_sum"] += buffer.sum(axis=1)
        np.maximum(self.buffer_max, buffer.max(axis=1), out=self.buffer_max)
        d = r.deliveries
        if d.env.size:
            flat = d.env * self.latency_hist.shape[1] + d.latency
            self.latency_hist += np.bincount(flat, minlength=self.latency_hist.size).reshape(
                self.latency_hist.shape)

    def result(self) -> dict[str, np.ndarray]:
        """One value per KPI and environment: ``{kpi: (B,) float array}``."""
        c, cell = self.counts, self.cell
        seconds = self.ttis * cell.tti_ms / 1000.0
        mean_ues = self.active_ue_ttis / max(self.ttis, 1)
        rbg_ttis = self.ttis * cell.n_rbgs
        received = self.latency_hist.sum(axis=1)
        lags = np.arange(self.latency_hist.shape[1])
        return {
            "throughput_mbps": self.delivered.sum(axis=1) / mean_ues / seconds / 1e6,  # eq. 23
            "fairness": jain_index(self.delivered, self.ever_active),
            "resource_efficiency": _ratio(c["completed"], c["attempts"]),  # eq. 24
            "packet_success_rate": _ratio(c["successes"], c["attempts"]),
            "latency_mean": _ratio(self.latency_hist @ lags, received),
            "latency_p95": _percentile_from_histogram(self.latency_hist, 0.95),
            "buffer_mean": c["buffer_sum"] / self.active_ue_ttis,
            "buffer_max": self.buffer_max.copy(),
            "collision_rate": c["collisions"] / rbg_ttis,
            "idle_rbg_rate": c["idle"] / rbg_ttis,
            "erasure_rate": c["erasures"] / rbg_ttis,
            "drop_rate": _ratio(c["dropped"], c["arrived"]),
            "invalid_action_rate": c["invalid"] / c["actions"],
            "leader_utility": c["leader_utility"] / self.ttis,
            "follower_utility": c["follower_utility"] / self.active_ue_ttis,
        }


def _percentile_from_histogram(hist: np.ndarray, q: float) -> np.ndarray:
    """Nearest-rank q-quantile per row of a histogram over 0..L-1; NaN for an empty row."""
    total = hist.sum(axis=1)
    rank = np.ceil(q * total)  # the smallest value with at least ceil(q * n) samples at or below
    cumulative = np.cumsum(hist, axis=1)
    value = (cumulative < rank[:, None]).sum(axis=1).astype(np.float64)
    return np.where(total > 0, value, np.nan)


@dataclass(frozen=True)
class Summary:
    """Mean of n episodes with the half-width of its 95 % confidence interval."""

    mean: float
    std: float
    n: int
    ci95: float

    def __str__(self) -> str:
        return "n/a" if self.n == 0 else f"{self.mean:.4g} ± {self.ci95:.2g}"


def t_quantile_975(df: int) -> float:
    """Two-sided 95 % Student-t critical value; exact table to df 4, Cornish-Fisher beyond."""
    table = {1: 12.7062, 2: 4.3027, 3: 3.1824, 4: 2.7764}
    if df in table:
        return table[df]
    z = NormalDist().inv_cdf(0.975)
    g1 = (z**3 + z) / 4
    g2 = (5 * z**5 + 16 * z**3 + 3 * z) / 96
    g3 = (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / 384
    g4 = (79 * z**9 + 776 * z**7 + 1482 * z**5 - 1920 * z**3 - 945 * z) / 92160
    return z + g1 / df + g2 / df**2 + g3 / df**3 + g4 / df**4


def summarize_values(values: Iterable[float]) -> Summary:
    x = np.asarray(list(values), dtype=np.float64)
    x = x[~np.isnan(x)]
    n = int(x.size)
    if n == 0:
        return Summary(math.nan, math.nan, 0, math.nan)
    if n == 1:
        return Summary(float(x[0]), 0.0, 1, math.nan)
    std = float(x.std(ddof=1))
    return Summary(float(x.mean()), std, n, t_quantile_975(n - 1) * std / math.sqrt(n))


def paired_difference(values: Iterable[float], reference: Iterable[float]) -> Summary:
    """Mean and 95 % CI (Student t) of the per-episode differences ``values - reference``.

    Episode e of both must have met the same environment (common random numbers: the same
    arrivals and channels), so the pairs' shared noise cancels and the CI is that of the
    difference itself, not of two independent means. A pair with a NaN is left out.
    """
    x, y = (np.asarray(list(v), dtype=np.float64) for v in (values, reference))
    if x.shape != y.shape:
        raise ValueError(f"paired samples of {x.size} and {y.size} episodes; allowed: the same "
                         "episodes (common random numbers) for both")
    return summarize_values(x - y)


def summarize(episodes: Iterable[Mapping[str, np.ndarray]]) -> dict[str, Summary]:
    """Pool per-episode KPI arrays (e.g. several :meth:`EpisodeKPIs.result` of different seeds)."""
    pooled: dict[str, list[float]] = {}
    for batch in episodes:
        for kpi, values in batch.items():
            pooled.setdefault(kpi, []).extend(np.atleast_1d(values).tolist())
    return {kpi: summarize_values(v) for kpi, v in pooled.items()}


def means(episodes: Mapping[str, np.ndarray]) -> dict[str, float]:
    """Each KPI's mean over the episodes of one result (a table row)."""
    return {kpi: s.mean for kpi, s in summarize([episodes]).items()}


def episodes_csv(groups: Iterable[tuple[Mapping[str, object], Mapping[str, np.ndarray]]]) -> str:
    """Every episode's KPIs as CSV, one line per episode: each group's labels (the same keys for
    every group: policy, I, seed, ...), the episode's index in its group, then every KPI (the
    union of the groups', empty where a group lacks one), exact (``repr``): what any later
    statistic needs, from disk."""
    import csv
    import io

    groups = list(groups)
    if not groups:
        return ""
    names = list(groups[0][0])
    if any(list(labels) != names for labels, _ in groups):
        raise ValueError(f"episode groups with different labels; allowed: {names} for every one")
    kpis = sorted({kpi for _, result in groups for kpi in result})
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([*names, "episode", *kpis])
    for labels, result in groups:
        count = max(len(np.atleast_1d(values)) for values in result.values())
        for e in range(count):
            writer.writerow([*labels.values(), e,
                             *(repr(float(result[k][e])) if k in result else "" for k in kpis)])
    return out.getvalue()
