"""KPIs of the hyper-cellular network, per network and per cell, and a runner for any policies.

:class:`NetworkKPIs` accumulates :class:`~textgame.network.NetworkStep` results of B lock-step
networks; :meth:`~NetworkKPIs.result` gives one value per KPI and network (pool them with
:func:`textgame.metrics.summarize` for 95 % CIs), :meth:`~NetworkKPIs.cell_result` one per cell.
:func:`run_network_episodes` plays any single-cell ``LeaderPolicy``/``FollowerPolicy`` pair on
every DBS, with the seeds of :func:`textgame.runner.batch_seeds`.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from textgame.metrics import _ratio
from textgame.network import NetworkGame, NetworkStep
from textgame.network_config import NetworkConfig
from textgame.policies import FollowerPolicy, LeaderPolicy
from textgame.runner import batch_seeds
from textgame.simulator import COLLISION, IDLE
from textgame.utilities import jain_index

NETWORK_KPI_DESCRIPTIONS: dict[str, str] = {
    "network_throughput_mbps": "delivered bits of all UEs per second, Mbps (eq. 23 summed)",
    "throughput_per_cell_mbps": "network throughput / C, Mbps",
    "ue_throughput_mbps": "network throughput / U: eq. 23 per UE, Mbps",
    "local_ue_throughput_mbps": "mean eq. 23 throughput of a local UE, Mbps",
    "edge_ue_throughput_mbps": "mean eq. 23 throughput of an edge UE, Mbps (NaN without)",
    "fairness_ues": "Jain's index of per-UE delivered bits over all UEs of the network",
    "fairness_cells": "Jain's index of per-cell delivered bits over the C cells",
    "collision_rate": "fraction of pool RBG-TTIs with a collision",
    "idle_rbg_rate": "fraction of pool RBG-TTIs nobody transmitted on",
    "packet_success_rate": "successful RBG transmissions / attempts",
    "resource_efficiency": "received dPDUs / RBG attempts (eq. 24)",
    "latency_mean": "mean dPDU latency, TTIs",
    "drop_rate": "dPDUs refused by a full buffer / dPDUs arrived",
    "leader_utility": "mean F_b,t over DBSs and TTIs (eq. 5)",
    "follower_utility": "mean F_i,t over cell slots and TTIs (eq. 2)",
}
CELL_KPIS = ("throughput_mbps", "fairness", "collision_rate", "rbg_share")


class NetworkKPIs:
    """Accumulates the KPIs of B lock-step network episodes; :meth:`update` once per TTI."""

    def __init__(self, game: NetworkGame) -> None:
        self.game = game
        self.reset()

    def reset(self) -> None:
        g = self.game
        b, c = g.n_networks, g.n_cells
        self.ttis = 0
        self.delivered = np.zeros((b, g.n_ues))  # bits per UE
        self.cell_delivered = np.zeros((g.n_envs, g.max_ues))  # bits per cell slot
        self.cell_collisions = np.zeros((b, c))
        self.cell_rbg_ttis = np.zeros((b, c))  # RBGs owned, summed over TTIs
        self.counts = {k: np.zeros(b) for k in (
            "attempts", "successes", "busy", "completed", "latency_sum", "arrived", "dropped",
            "leader_utility", "follower_utility")}

    def update(self, step: NetworkStep) -> None:
        g, r, c = self.game, step.report, self.counts
        shape = (g.n_networks, g.n_cells)
        self.ttis += 1
        self.delivered += r.delivered_bits
        self.cell_delivered += r.cell_delivered_bits
        self.cell_collisions += (r.rbg_outcome == COLLISION).sum(axis=1).reshape(shape)
        self.cell_rbg_ttis += r.shares
        c["busy"] += (r.rbg_outcome != IDLE).sum(axis=1).reshape(shape).sum(axis=1)
        for key, ue_array in (("attempts", r.attempts), ("successes", r.successes),
                              ("completed", r.completed_dpdus), ("arrived", r.arrived_dpdus),
                              ("dropped", r.dropped_dpdus)):
            c[key] += ue_array.sum(axis=1)
        d = r.deliveries
        c["latency_sum"] += np.bincount(d.env, weights=d.latency, minlength=g.n_networks)
        c["leader_utility"] += step.leader_reward.reshape(shape).mean(axis=1)
        c["follower_utility"] += step.follower_reward.reshape(shape + (-1,)).sum(axis=(1, 2))

    def _seconds(self) -> float:
        return self.ttis * self.game.config.scenario.cell.tti_ms / 1000.0

    def result(self) -> dict[str, np.ndarray]:
        """One value per KPI and network: ``{kpi: (B,) float array}``."""
        g, c = self.game, self.counts
        per_ue = self.delivered / self._seconds() / 1e6  # (B, U) Mbps, eq. 23 per UE
        network = per_ue.sum(axis=1)
        edge = g.is_edge
        pool_ttis = self.ttis * g.config.pool_rbgs
        cells = self.cell_delivered.sum(axis=1).reshape(g.n_networks, g.n_cells)
        return {
            "network_throughput_mbps": network,
            "throughput_per_cell_mbps": network / g.n_cells,
            "ue_throughput_mbps": network / g.n_ues,
            "local_ue_throughput_mbps": per_ue[:, ~edge].mean(axis=1),
            "edge_ue_throughput_mbps": (per_ue[:, edge].mean(axis=1) if edge.any()
                                        else np.full(g.n_networks, np.nan)),
            "fairness_ues": jain_index(self.delivered),
            "fairness_cells": jain_index(cells),
            "collision_rate": self.cell_collisions.sum(axis=1) / pool_ttis,
            "idle_rbg_rate": 1.0 - c["busy"] / pool_ttis,
            "packet_success_rate": _ratio(c["successes"], c["attempts"]),
            "resource_efficiency": _ratio(c["completed"], c["attempts"]),  # eq. 24
            "latency_mean": _ratio(c["latency_sum"], c["completed"]),
            "drop_rate": _ratio(c["dropped"], c["arrived"]),
            "leader_utility": c["leader_utility"] / self.ttis,
            "follower_utility": c["follower_utility"] / (self.ttis * g.active.sum() / g.n_networks),
        }

    def cell_result(self) -> dict[str, np.ndarray]:
        """One value per KPI and cell: ``{kpi: (B, C) float array}`` (:data:`CELL_KPIS`)."""
        g = self.game
        shape = (g.n_networks, g.n_cells)
        return {
            "throughput_mbps": self.cell_delivered.sum(axis=1).reshape(shape)
            / self._seconds() / 1e6,
            "fairness": jain_index(self.cell_delivered, g.active).reshape(shape),
            "collision_rate": _ratio(self.cell_collisions, self.cell_rbg_ttis),
            "rbg_share": self.cell_rbg_ttis / self.ttis,
        }


def play_network(game: NetworkGame, leader: LeaderPolicy, follower: FollowerPolicy,
                 seed: int | np.random.SeedSequence | None, policy_seed=None,
                 kpis: NetworkKPIs | None = None) -> NetworkKPIs:
    """One lock-step batch of network episodes; every DBS and cell slot plays the policies."""
    rng = np.random.default_rng(policy_seed)
    leader.reset(game.n_envs, game.max_ues, game.n_rbgs, rng)
    follower.reset(game.n_envs, game.max_ues, game.n_rbgs, game.ucm_levels, rng)
    kpis = kpis or NetworkKPIs(game)
    kpis.reset()
    obs = game.reset(seed)
    while True:
        step = game.step_followers(*follower.act(game.step_leader(leader.act(obs))))
        kpis.update(step)
        if step.done:
            return kpis
        obs = step.leader_obs


def run_network_episodes(config: NetworkConfig, leader: LeaderPolicy, follower: FollowerPolicy,
                         episodes: int, n_networks: int = 16, seed: int = 0,
                         on_batch: Callable[[int], None] | None = None,
                         ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Play ``episodes`` network episodes in lock-step batches of up to ``n_networks``.

    Returns ``({kpi: (episodes,)}, {cell kpi: (episodes, C)})``; seeds as
    :func:`textgame.runner.run_episodes` (common random numbers across policies).
    """
    if isinstance(episodes, bool) or not isinstance(episodes, int) or episodes < 1:
        raise ValueError(f"episodes = {episodes!r} is invalid; allowed: an integer >= 1")
    results: dict[str, list[np.ndarray]] = {}
    cells: dict[str, list[np.ndarray]] = {}
    for b, game_seed, policy_seed in batch_seeds(episodes, n_networks, seed):
        kpis = play_network(NetworkGame(config, b), leader, follower, game_seed, policy_seed)
        for out, values in ((results, kpis.result()), (cells, kpis.cell_result())):
            for kpi, v in values.items():
                out.setdefault(kpi, []).append(v)
        if on_batch is not None:
            on_batch(b)
    return ({k: np.concatenate(v) for k, v in results.items()},
            {k: np.concatenate(v) for k, v in cells.items()})
