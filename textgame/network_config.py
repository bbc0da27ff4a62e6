"""Configuration of a hyper-cellular network (paper Table IV) and the UE slots of its cells.

:class:`NetworkConfig` validates itself like the configs of :mod:`textgame.config` (a
:class:`~textgame.config.ConfigError` names field, value and what is allowed); the model and its
assumptions are described in :mod:`textgame.network`.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import numpy as np

from textgame.config import ScenarioConfig, check_int_at_least, fail_field
from textgame.partition import PARTITIONS

TOPOLOGIES = ("ring", "line")


@dataclass(frozen=True)
class NetworkConfig:
    """A hyper-cellular network: the cell template, the topology and the CBS's partition.

    Parameters that shape the network: ``n_cells``, ``topology``, ``local_ues``, ``edge_ues``.
    Parameters of the CBS: ``partition``, ``partition_period_ttis``, ``total_rbgs``,
    ``max_share_rbgs``. Everything else (N per cell, T, traffic, channel, rewards) comes from
    ``scenario``.
    """

    scenario: ScenarioConfig = field(default_factory=ScenarioConfig)
    """Per-cell template: n_rbgs is the average share N per cell; churn must be off."""
    n_cells: int = 4
    """C: data base stations (DBS cells)."""
    topology: str = "ring"
    """'ring' or 'line': which cells share an edge UE."""
    local_ues: int = 4
    """UEs served by one DBS only (paper: four)."""
    edge_ues: bool = True
    """One edge UE per pair of neighbouring cells (paper: one per cell)."""
    partition: str = "equal"
    """The CBS's partition policy: 'equal', 'proportional' or 'random'."""
    partition_period_ttis: int = 1
    """The CBS re-partitions at the first TTI of every frame of this many TTIs."""
    total_rbgs: int | None = None
    """M: the global pool; None means n_cells * scenario.cell.n_rbgs."""
    max_share_rbgs: int | None = None
    """Cap on one DBS's share (its longest DCM); None means 2 * N, at most M (assumed)."""

    def __post_init__(self) -> None:
        o = "NetworkConfig"
        if not isinstance(self.scenario, ScenarioConfig):
            fail_field(o, "scenario", self.scenario, "a textgame.config.ScenarioConfig")
        cell = self.scenario.cell
        for name in ("join_prob", "leave_prob"):
            if getattr(cell, name) != 0:
                fail_field(o, f"scenario.cell.{name}", getattr(cell, name),
                      "0 (the UEs of a network are fixed; no churn)")
        for name in ("n_cells", "local_ues", "partition_period_ttis"):
            check_int_at_least(o, name, getattr(self, name), 1)
        if self.topology not in TOPOLOGIES:
            fail_field(o, "topology", self.topology, f"one of {list(TOPOLOGIES)}")
        if not isinstance(self.edge_ues, bool):
            fail_field(o, "edge_ues", self.edge_ues, "true or false")
        if self.partition not in PARTITIONS:
            fail_field(o, "partition", self.partition, f"one of {sorted(PARTITIONS)}")
        if self.total_rbgs is not None:
            check_int_at_least(o, "total_rbgs", self.total_rbgs, 1)
        if self.max_share_rbgs is not None:
            low = math.ceil(self.pool_rbgs / self.n_cells)
            check_int_at_least(o, "max_share_rbgs", self.max_share_rbgs, low)

    @classmethod
    def from_dict(cls, data: dict | None) -> NetworkConfig:
        """Build from a mapping: the fields, with ``scenario`` as ScenarioConfig.from_dict takes."""
        data = dict(data or {})
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            fail_field("NetworkConfig", unknown[0], data[unknown[0]], f"one of {sorted(names)}")
        data["scenario"] = ScenarioConfig.from_dict(data.get("scenario"))
        return cls(**data)

    # ------------------------------------------------------------------------ derived sizes
    @property
    def pool_rbgs(self) -> int:
        """M: RBGs of the global pool."""
        return self.total_rbgs or self.n_cells * self.scenario.cell.n_rbgs

    @property
    def share_cap(self) -> int:
        """The largest share one DBS may get."""
        cap = self.max_share_rbgs or 2 * self.scenario.cell.n_rbgs
        return min(max(cap, math.ceil(self.pool_rbgs / self.n_cells)), self.pool_rbgs)

    @property
    def n_edge_ues(self) -> int:
        if not self.edge_ues:
            return 0
        return self.n_cells if self.topology == "ring" else self.n_cells - 1

    @property
    def n_ues(self) -> int:
        """U: UEs of one network; locals of cell c are c*L..c*L+L-1, edge UE e is C*L+e."""
        return self.n_cells * self.local_ues + self.n_edge_ues

    def edge_cells(self, edge: int) -> tuple[int, int]:
        """(home, neighbour) cells of edge UE ``edge``; equal for a ring of one cell."""
        return edge, (edge + 1) % self.n_cells

    def cell_slot(self) -> np.ndarray:
        """(U,) each UE's slot in the per-cell pattern: j for local j, ``local_ues`` for edges."""
        local = np.arange(self.n_cells * self.local_ues) % self.local_ues
        return np.concatenate([local, np.full(self.n_edge_ues, self.local_ues)])

    def network_scenario(self) -> ScenarioConfig:
        """The single-cell scenario whose simulator holds all U UEs and the pool of M RBGs.

        The per-slot lists of the template (traffic models, Bernoulli rates, fixed channel
        states), cyclic over a cell's slots, are laid out so that every cell has the same
        pattern: local j takes entry j, an edge UE entry ``local_ues`` (cyclically). Every cell
        thus offers the same mean load whatever C.
        """
        slot = self.cell_slot()

        def spread(values: tuple) -> tuple:
            return tuple(values[j % len(values)] for j in slot)

        s = self.scenario
        cell = s.cell.with_ue_counts((self.n_ues,), n_rbgs=self.pool_rbgs)
        traffic = dataclasses.replace(s.traffic, models=spread(s.traffic.models),
                                      bernoulli_rates=spread(s.traffic.bernoulli_rates))
        channel = dataclasses.replace(s.channel, fixed_states=spread(s.channel.fixed_states))
        return dataclasses.replace(s, cell=cell, traffic=traffic, channel=channel)


def cell_views(config: NetworkConfig) -> tuple[np.ndarray, np.ndarray]:
    """The UE slots of every cell's view: (C, I_view) global UE index (-1 = padding) and
    (C, I_view) bool, True where the slot is the UE's home appearance (locals, own edge UE)."""
    c_count, local = config.n_cells, config.local_ues
    slots: list[list[tuple[int, bool]]] = [
        [(c * local + j, True) for j in range(local)] for c in range(c_count)]
    for edge in range(config.n_edge_ues):
        home, neighbour = config.edge_cells(edge)
        slots[home].append((c_count * local + edge, True))
        if neighbour != home:
            slots[neighbour].append((c_count * local + edge, False))
    for cell in slots:  # own edge UE before the neighbour's
        cell[local:] = sorted(cell[local:], key=lambda s: not s[1])
    width = max(len(cell) for cell in slots)
    view_ue = np.full((c_count, width), -1, dtype=np.int64)
    home = np.zeros((c_count, width), dtype=bool)
    for c, cell in enumerate(slots):
        view_ue[c, :len(cell)] = [ue for ue, _ in cell]
        home[c, :len(cell)] = [h for _, h in cell]
    return view_ue, home
