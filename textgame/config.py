"""Configuration of the uplink cell (design §2): one dataclass per component, every default
from the design doc.

Every dataclass validates itself in ``__post_init__`` and raises :class:`ConfigError` naming the
field, the offending value and what is allowed. ``ScenarioConfig.from_dict`` builds a scenario from
nested mappings (YAML) and rejects unknown keys the same way.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

TRAFFIC_MODELS = ("bernoulli", "periodic", "bursty")
CHANNEL_STATES = ("poor", "medium", "good")


class ConfigError(ValueError):
    """An invalid configuration value; the message names the field, the value, what is allowed."""


def help_field(text: str, **kwargs) -> Any:
    """A dataclass field whose metadata carry its help (what ``HfArgumentParser`` prints)."""
    return dataclasses.field(metadata={"help": text}, **kwargs)


def fail_field(owner: str, name: str, value: Any, allowed: str) -> None:
    raise ConfigError(f"{owner}.{name} = {value!r} is invalid; allowed: {allowed}")


def check_int_at_least(owner: str, name: str, value: Any, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        fail_field(owner, name, value, f"an integer >= {low}")


def check_real_in(owner: str, name: str, value: Any, low: float, high: float, *,
             high_open: bool = False) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and low <= value and (value < high if high_open else value <= high)
    if not ok:
        fail_field(owner, name, value, f"a number in [{low}, {high}{')' if high_open else ']'}")


def check_positive(owner: str, name: str, value: Any) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not (ok and value > 0):
        fail_field(owner, name, value, "a finite number > 0")



@dataclass(frozen=True)
class CellConfig:
    """The OFDMA cell, its UE population and the episode (design §2 table)."""

    n_rbgs: int = 4
    """N: resource block groups per TTI, also the DCM length M."""
    rbs_per_rbg: int = 4
    """n_RB: resource blocks per RBG (assumed)."""
    subcarriers_per_rb: int = 12
    """Subcarriers per resource block (eq. 1)."""
    symbols_per_tti: int = 14
    """OFDM symbols per TTI (eq. 1)."""
    tti_ms: float = 0.5
    """TTI duration in ms (numerology mu = 1, 30 kHz)."""
    episode_ttis: int = 50
    """T: TTIs per episode (assumed)."""
    dpdu_bits: int = 256
    """D: bits per MAC data PDU."""
    buffer_dpdus: int = 100
    """Q: FIFO capacity in dPDUs; arrivals beyond it are dropped (assumed)."""
    tbler: float = 0.01
    """Residual erasure probability of a collision-free RBG, in [0, 1) (assumed)."""
    ucm_levels: int = 4
    """K: size of the uplink control message alphabet (assumed)."""
    ue_counts: tuple[int, ...] = (3, 4, 5)
    """Support of D(I): the UE counts drawn once per episode."""
    ue_probs: tuple[float, ...] | None = None
    """Probabilities of ``ue_counts``; None means uniform."""
    max_ues: int | None = None
    """I_max: padded UE dimension; None means max(ue_counts)."""
    join_prob: float = 0.0
    """Churn: per-TTI probability that an inactive UE slot joins (0 = no churn)."""
    leave_prob: float = 0.0
    """Churn: per-TTI probability that an active UE leaves (its buffer is dropped)."""

    def __post_init__(self) -> None:
        o = "CellConfig"
        for name in ("n_rbgs", "rbs_per_rbg", "subcarriers_per_rb", "symbols_per_tti",
                     "episode_ttis", "dpdu_bits", "buffer_dpdus"):
            check_int_at_least(o, name, getattr(self, name), 1)
        check_int_at_least(o, "ucm_levels", self.ucm_levels, 1)
        check_positive(o, "tti_ms", self.tti_ms)
        check_real_in(o, "tbler", self.tbler, 0.0, 1.0, high_open=True)
        counts = self.ue_counts
        if (not isinstance(counts, Sequence) or isinstance(counts, str) or len(counts) == 0
                or any(isinstance(c, bool) or not isinstance(c, int) or c < 1 for c in counts)):
            fail_field(o, "ue_counts", counts, "a non-empty list of integers >= 1")
        object.__setattr__(self, "ue_counts", tuple(counts))
        if self.ue_probs is not None:
            p = self.ue_probs
            if (not isinstance(p, Sequence) or len(p) != len(counts)
                    or any(not isinstance(x, (int, float)) or not x >= 0 for x in p)
                    or not math.isclose(sum(p), 1.0, abs_tol=1e-9)):
                fail_field(o, "ue_probs", p,
                      f"{len(counts)} non-negative numbers summing to 1 (one per ue_counts entry)")
            object.__setattr__(self, "ue_probs", tuple(float(x) for x in p))
        if self.max_ues is None:
            object.__setattr__(self, "max_ues", max(counts))
        elif isinstance(self.max_ues, bool) or not isinstance(self.max_ues, int) or (
                self.max_ues < max(counts)):
            fail_field(o, "max_ues", self.max_ues,
                  f"an integer >= the largest UE count of ue_counts ({max(counts)})")
        check_real_in(o, "join_prob", self.join_prob, 0.0, 1.0)
        check_real_in(o, "leave_prob", self.leave_prob, 0.0, 1.0)

    @property
    def rbg_resource_elements(self) -> int:
        """Resource elements of one RBG in one TTI: n_RB * 12 * 14 (eq. 1)."""
        return self.rbs_per_rbg * self.subcarriers_per_rb * self.symbols_per_tti

    @property
    def churn(self) -> bool:
        return self.join_prob > 0 or self.leave_prob > 0

    def with_ue_counts(self, ue_counts: Sequence[int], **changes: Any) -> CellConfig:
        """This cell with D(I) uniform on ``ue_counts`` (one count: a fixed-I cell) and
        I_max = max(ue_counts) unless ``changes`` sets ``max_ues``; ``changes``: other fields."""
        return replace_checked(self, **{"ue_probs": None, "max_ues": None, **changes,
                                        "ue_counts": tuple(ue_counts)})


@dataclass(frozen=True)
class TrafficConfig:
    """Per-UE packet arrival processes (eqs. 47-49); models are assigned to UE slots cyclically."""

    models: tuple[str, ...] = ("bernoulli",)
    """Traffic model of UE slot i is ``models[i % len(models)]``: bernoulli, periodic or bursty."""
    bernoulli_rates: tuple[float, ...] = (0.2, 0.5, 0.8)
    """lambda_i: per-TTI dPDU arrival probability, assigned cyclically over UE slots (eq. 47)."""
    period_ttis: int = 4
    """P: a periodic UE emits one dPDU when (t + offset_i) mod P == 0 (eq. 48)."""
    on_ttis: int = 5
    """Bursty UE: length of the ON period in TTIs (eq. 49)."""
    off_ttis: int = 15
    """Bursty UE: length of the OFF period in TTIs (eq. 49)."""
    burst_dpdus: int = 4
    """S: dPDUs emitted at the start of every ON period (eq. 49)."""
    initial_dpdus: int = 0
    """dPDUs already in every UE's buffer at reset (born at TTI 0); the paper's stress test
    (Table VIII) starts with large buffers."""

    def __post_init__(self) -> None:
        o = "TrafficConfig"
        m = self.models
        if (not isinstance(m, Sequence) or isinstance(m, str) or len(m) == 0
                or any(x not in TRAFFIC_MODELS for x in m)):
            fail_field(o, "models", m, f"a non-empty list drawn from {list(TRAFFIC_MODELS)}")
        object.__setattr__(self, "models", tuple(m))
        r = self.bernoulli_rates
        if not isinstance(r, Sequence) or isinstance(r, str) or len(r) == 0:
            fail_field(o, "bernoulli_rates", r, "a non-empty list of probabilities in [0, 1]")
        for x in r:
            if isinstance(x, bool) or not isinstance(x, (int, float)) or not 0.0 <= x <= 1.0:
                fail_field(o, "bernoulli_rates", r, "a non-empty list of probabilities in [0, 1]")
        object.__setattr__(self, "bernoulli_rates", tuple(float(x) for x in r))
        check_int_at_least(o, "period_ttis", self.period_ttis, 1)
        check_int_at_least(o, "on_ttis", self.on_ttis, 1)
        check_int_at_least(o, "off_ttis", self.off_ttis, 0)
        check_int_at_least(o, "burst_dpdus", self.burst_dpdus, 1)
        check_int_at_least(o, "initial_dpdus", self.initial_dpdus, 0)


@dataclass(frozen=True)
class ChannelConfig:
    """Three-state DTMC channel with uniform dwell times and the BS's aged CSI (eq. 46)."""

    spectral_efficiency: tuple[float, float, float] = (0.2344, 0.3770, 0.6016)
    """eta per state (poor, medium, good) in bit/s/Hz (TS 38.214 low MCS, assumed)."""
    dwell_min_ms: float = 1.0
    """Lower end of the uniform dwell time between DTMC transitions, in ms (assumed)."""
    dwell_max_ms: float = 5.0
    """Upper end of the uniform dwell time, in ms (assumed)."""
    stay_prob: float = 0.8
    """Probability that a transition keeps the state; neighbouring states share the rest."""
    csi_delay_ttis: int = 1
    """delta: the BS sees q_{t - delta} (held at q_0 for t < delta)."""
    initial: str = "stationary"
    """Initial state law: 'stationary' (of the DTMC), 'uniform', or 'fixed' (fixed_states)."""
    fixed_states: tuple[int, ...] = (2, 1, 0)
    """With initial='fixed': the start state of UE slot i is ``fixed_states[i % len]`` (0 poor,
    1 medium, 2 good); with stay_prob = 1 the channels never change (paper Table VIII)."""

    def __post_init__(self) -> None:
        o = "ChannelConfig"
        se = self.spectral_efficiency
        if (not isinstance(se, Sequence) or len(se) != 3
                or any(isinstance(x, bool) or not isinstance(x, (int, float)) or not x > 0
                       or not math.isfinite(x) for x in se)):
            fail_field(o, "spectral_efficiency", se,
                       "three finite numbers > 0 (poor, medium, good)")
        object.__setattr__(self, "spectral_efficiency", tuple(float(x) for x in se))
        check_positive(o, "dwell_min_ms", self.dwell_min_ms)
        check_positive(o, "dwell_max_ms", self.dwell_max_ms)
        if self.dwell_max_ms < self.dwell_min_ms:
            fail_field(o, "dwell_max_ms", self.dwell_max_ms,
                       f">= dwell_min_ms ({self.dwell_min_ms})")
        check_real_in(o, "stay_prob", self.stay_prob, 0.0, 1.0)
        check_int_at_least(o, "csi_delay_ttis", self.csi_delay_ttis, 0)
        if self.initial not in ("stationary", "uniform", "fixed"):
            fail_field(o, "initial", self.initial, "'stationary', 'uniform' or 'fixed'")
        f = self.fixed_states
        if (not isinstance(f, Sequence) or isinstance(f, str) or len(f) == 0
                or any(isinstance(x, bool) or x not in (0, 1, 2) for x in f)):
            fail_field(o, "fixed_states", f, "a non-empty list of channel states 0, 1 or 2")
        object.__setattr__(self, "fixed_states", tuple(int(x) for x in f))

    def transition_matrix(self) -> list[list[float]]:
        """3x3 DTMC matrix: stay with ``stay_prob``, neighbours share the rest (eq. 46)."""
        s, r = self.stay_prob, 1.0 - self.stay_prob
        return [[s, r, 0.0], [r / 2, s, r / 2], [0.0, r, s]]


@dataclass(frozen=True)
class RewardConfig:
    """Weights of the follower (eqs. 2-3) and leader (eq. 5) utilities."""

    omega1: float = 0.5
    """Follower weight of the delivery ratio min(1, rx / max(tx, 1)) (eq. 2)."""
    omega2: float = 0.5
    """Follower weight of the DCM consistency S(b, d) = 1 - Hamming(b, d) / N (eqs. 2-3)."""
    fairness_weight: float = 0.5
    """lambda: leader weight of the JFI term against normalised throughput (eq. 5)."""

    def __post_init__(self) -> None:
        o = "RewardConfig"
        for name in ("omega1", "omega2", "fairness_weight"):
            check_real_in(o, name, getattr(self, name), 0.0, 1.0)


@dataclass(frozen=True)
class ScenarioConfig:
    """A complete scenario: cell, traffic, channel and reward."""

    cell: CellConfig = field(default_factory=CellConfig)
    traffic: TrafficConfig = field(default_factory=TrafficConfig)
    channel: ChannelConfig = field(default_factory=ChannelConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)

    def __post_init__(self) -> None:
        smallest = int(self.cell.rbg_resource_elements * min(self.channel.spectral_efficiency))
        if smallest < 1:  # eq. 1 must give every RBG at least one bit
            fail_field("ChannelConfig", "spectral_efficiency", self.channel.spectral_efficiency,
                  f"values for which floor({self.cell.rbg_resource_elements} * eta) >= 1 bit "
                  "(the RBG capacity of eq. 1)")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> ScenarioConfig:
        """Build from nested mappings, e.g. a YAML file's ``scenario:`` section."""
        data = dict(data or {})
        parts = {f.name: f.default_factory for f in dataclasses.fields(cls)}  # type: ignore[misc]
        unknown = sorted(set(data) - set(parts))
        if unknown:
            fail_field("ScenarioConfig", unknown[0], data[unknown[0]], f"one of {sorted(parts)}")
        kwargs = {}
        for name, factory in parts.items():
            sub = data.get(name) or {}
            if not isinstance(sub, Mapping):
                fail_field("ScenarioConfig", name, sub, "a mapping of field names to values")
            kwargs[name] = replace_checked(factory(), **sub)  # fresh: derived fields re-derive
        return cls(**kwargs)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return dataclasses.asdict(self)

    def with_ue_counts(self, ue_counts: Sequence[int], **cell_changes: Any) -> ScenarioConfig:
        """This scenario on :meth:`CellConfig.with_ue_counts` (traffic, channel, reward kept)."""
        return dataclasses.replace(self, cell=self.cell.with_ue_counts(ue_counts, **cell_changes))


def replace_checked(config: Any, **changes: Any) -> Any:
    """``dataclasses.replace`` that names an unknown field instead of raising a bare TypeError.

    Lists are turned into tuples so YAML sequences fit the tuple-typed fields. A ``CellConfig``
    whose ``max_ues`` tracked ``max(ue_counts)`` re-derives it when ``ue_counts`` changes.
    """
    names = {f.name for f in dataclasses.fields(config)}
    for key, value in changes.items():
        if key not in names:
            fail_field(type(config).__name__, key, value, f"one of the fields {sorted(names)}")
    changes = {k: tuple(v) if isinstance(v, list) else v for k, v in changes.items()}
    if (isinstance(config, CellConfig) and "ue_counts" in changes and "max_ues" not in changes
            and config.max_ues == max(config.ue_counts)):
        changes["max_ues"] = None
    return dataclasses.replace(config, **changes)


def scenario_field(owner: str, value: Any) -> dict | None:
    """A config's ``scenario`` field as a mapping (a JSON string is parsed) or None, with every
    section and field validated by :meth:`ScenarioConfig.from_dict`."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as error:
            fail_field(owner, "scenario", value, f"a mapping or a JSON object ({error})")
    if value is not None and not isinstance(value, dict):
        fail_field(owner, "scenario", value, "None, a mapping or a JSON object")
    ScenarioConfig.from_dict(value)
    return value
