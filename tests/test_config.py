"""Scenario configuration (design §2 table): the paper defaults and validation at the boundary."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from textgame.config import (
    CellConfig,
    ChannelConfig,
    ConfigError,
    RewardConfig,
    ScenarioConfig,
    TrafficConfig,
)

NAN = float("nan")
INF = float("inf")


# ----------------------------------------------------------------------------------- defaults
def test_cell_defaults_match_spec_table():
    cell = CellConfig()
    assert cell.n_rbgs == 4
    assert cell.rbs_per_rbg == 4
    assert cell.subcarriers_per_rb == 12
    assert cell.symbols_per_tti == 14
    assert cell.tti_ms == 0.5
    assert cell.episode_ttis == 50
    assert cell.dpdu_bits == 256
    assert cell.buffer_dpdus == 100
    assert cell.tbler == 0.01
    assert cell.ucm_levels == 4
    assert cell.ue_counts == (3, 4, 5)
    assert cell.ue_probs is None
    assert cell.join_prob == 0.0 and cell.leave_prob == 0.0
    assert not cell.churn


def test_cell_max_ues_defaults_to_largest_ue_count():
    assert CellConfig().max_ues == 5
    assert CellConfig(ue_counts=(2, 9, 4)).max_ues == 9


def test_cell_resource_elements_are_n_rb_times_12_times_14():
    assert CellConfig().rbg_resource_elements == 4 * 12 * 14
    assert CellConfig(rbs_per_rbg=2).rbg_resource_elements == 2 * 12 * 14


def test_churn_is_on_when_either_probability_is_positive():
    assert CellConfig(join_prob=0.1).churn
    assert CellConfig(leave_prob=0.1).churn


def test_traffic_defaults_match_spec_table():
    traffic = TrafficConfig()
    assert traffic.models == ("bernoulli",)
    assert traffic.bernoulli_rates == (0.2, 0.5, 0.8)
    assert traffic.period_ttis == 4
    assert (traffic.on_ttis, traffic.off_ttis, traffic.burst_dpdus) == (5, 15, 4)


def test_channel_defaults_match_spec_table():
    channel = ChannelConfig()
    assert channel.spectral_efficiency == (0.2344, 0.3770, 0.6016)
    assert (channel.dwell_min_ms, channel.dwell_max_ms) == (1.0, 5.0)
    assert channel.stay_prob == 0.8
    assert channel.csi_delay_ttis == 1


def test_default_transition_matrix_stays_with_08_and_neighbours_share_the_rest():
    np.testing.assert_allclose(
        ChannelConfig().transition_matrix(),
        [[0.8, 0.2, 0.0], [0.1, 0.8, 0.1], [0.0, 0.2, 0.8]], rtol=0, atol=1e-12)


@pytest.mark.parametrize("stay", [0.0, 0.3, 0.8, 1.0])
def test_transition_matrix_rows_are_stochastic(stay):
    for row in ChannelConfig(stay_prob=stay).transition_matrix():
        assert min(row) >= 0.0
        assert math.isclose(sum(row), 1.0)


def test_reward_defaults_match_spec_table():
    reward = RewardConfig()
    assert (reward.omega1, reward.omega2, reward.fairness_weight) == (0.5, 0.5, 0.5)


def test_scenario_defaults_are_the_component_defaults():
    scenario = ScenarioConfig()
    assert scenario.cell == CellConfig()
    assert scenario.traffic == TrafficConfig()
    assert scenario.channel == ChannelConfig()
    assert scenario.reward == RewardConfig()


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(tbler=0.0), dict(tbler=0.5), dict(n_rbgs=8), dict(ue_counts=(1,)),
        dict(ue_counts=(2, 3), ue_probs=(0.25, 0.75)), dict(ue_counts=(3,), max_ues=7),
        dict(join_prob=1.0, leave_prob=1.0), dict(ucm_levels=1),
    ],
)
def test_cell_accepts_valid_edge_values(kwargs):
    cell = CellConfig(**kwargs)
    for key, value in kwargs.items():
        assert getattr(cell, key) == value


def test_traffic_accepts_zero_off_period_and_certain_arrivals():
    traffic = TrafficConfig(off_ttis=0, bernoulli_rates=(0.0, 1.0))
    assert traffic.off_ttis == 0
    assert traffic.bernoulli_rates == (0.0, 1.0)


# --------------------------------------------------------------------------------- validation
CASES = [
    # (config class, field, value, extra keyword arguments)
    (CellConfig, "n_rbgs", 0, {}),
    (CellConfig, "n_rbgs", -3, {}),
    (CellConfig, "n_rbgs", True, {}),
    (CellConfig, "n_rbgs", 4.0, {}),
    (CellConfig, "rbs_per_rbg", 0, {}),
    (CellConfig, "subcarriers_per_rb", False, {}),
    (CellConfig, "symbols_per_tti", 0, {}),
    (CellConfig, "episode_ttis", 0, {}),
    (CellConfig, "episode_ttis", True, {}),
    (CellConfig, "dpdu_bits", 0, {}),
    (CellConfig, "buffer_dpdus", 0, {}),
    (CellConfig, "buffer_dpdus", 2.5, {}),
    (CellConfig, "ucm_levels", 0, {}),
    (CellConfig, "tti_ms", 0.0, {}),
    (CellConfig, "tti_ms", -0.5, {}),
    (CellConfig, "tti_ms", NAN, {}),
    (CellConfig, "tti_ms", INF, {}),
    (CellConfig, "tbler", 1.0, {}),
    (CellConfig, "tbler", -0.1, {}),
    (CellConfig, "tbler", 1.5, {}),
    (CellConfig, "tbler", NAN, {}),
    (CellConfig, "tbler", True, {}),
    (CellConfig, "tbler", "0.1", {}),
    (CellConfig, "ue_counts", (), {}),
    (CellConfig, "ue_counts", (3, 0), {}),
    (CellConfig, "ue_counts", (3, -1), {}),
    (CellConfig, "ue_counts", (3, 4.5), {}),
    (CellConfig, "ue_counts", (True, 3), {}),
    (CellConfig, "ue_counts", "345", {}),
    (CellConfig, "ue_counts", 3, {}),
    (CellConfig, "ue_probs", (0.5, 0.6, 0.1), {}),
    (CellConfig, "ue_probs", (0.5, 0.5), {}),
    (CellConfig, "ue_probs", (0.25, 0.25, 0.25, 0.25), {}),
    (CellConfig, "ue_probs", (1.5, -0.5, 0.0), {}),
    (CellConfig, "ue_probs", (NAN, 0.5, 0.5), {}),
    (CellConfig, "max_ues", 4, {}),
    (CellConfig, "max_ues", 2, dict(ue_counts=(3,))),
    (CellConfig, "max_ues", True, dict(ue_counts=(1,))),
    (CellConfig, "max_ues", 6.0, {}),
    (CellConfig, "join_prob", -0.1, {}),
    (CellConfig, "join_prob", 1.01, {}),
    (CellConfig, "leave_prob", 2.0, {}),
    (CellConfig, "leave_prob", NAN, {}),
    (TrafficConfig, "models", ("poisson",), {}),
    (TrafficConfig, "models", ("bernoulli", "cbr"), {}),
    (TrafficConfig, "models", (), {}),
    (TrafficConfig, "models", "bernoulli", {}),
    (TrafficConfig, "bernoulli_rates", (), {}),
    (TrafficConfig, "bernoulli_rates", (0.2, -0.1), {}),
    (TrafficConfig, "bernoulli_rates", (1.2,), {}),
    (TrafficConfig, "bernoulli_rates", (NAN,), {}),
    (TrafficConfig, "bernoulli_rates", (True,), {}),
    (TrafficConfig, "bernoulli_rates", 0.5, {}),
    (TrafficConfig, "period_ttis", 0, {}),
    (TrafficConfig, "period_ttis", True, {}),
    (TrafficConfig, "on_ttis", 0, {}),
    (TrafficConfig, "off_ttis", -1, {}),
    (TrafficConfig, "burst_dpdus", 0, {}),
    (TrafficConfig, "burst_dpdus", 4.0, {}),
    (ChannelConfig, "spectral_efficiency", (0.2, 0.4), {}),
    (ChannelConfig, "spectral_efficiency", (0.2, 0.4, 0.6, 0.8), {}),
    (ChannelConfig, "spectral_efficiency", (0.2, 0.0, 0.6), {}),
    (ChannelConfig, "spectral_efficiency", (0.2, -0.4, 0.6), {}),
    (ChannelConfig, "spectral_efficiency", (0.2, NAN, 0.6), {}),
    (ChannelConfig, "spectral_efficiency", (0.2, 0.4, INF), {}),
    (ChannelConfig, "dwell_min_ms", 0.0, {}),
    (ChannelConfig, "dwell_min_ms", NAN, {}),
    (ChannelConfig, "dwell_max_ms", -1.0, {}),
    (ChannelConfig, "dwell_max_ms", 0.5, {}),
    (ChannelConfig, "dwell_max_ms", 2.0, dict(dwell_min_ms=3.0)),
    (ChannelConfig, "stay_prob", -0.2, {}),
    (ChannelConfig, "stay_prob", 1.2, {}),
    (ChannelConfig, "stay_prob", NAN, {}),
    (ChannelConfig, "csi_delay_ttis", -1, {}),
    (ChannelConfig, "csi_delay_ttis", True, {}),
    (ChannelConfig, "csi_delay_ttis", 1.0, {}),
    (ChannelConfig, "initial", "random", {}),
    (RewardConfig, "omega1", -0.5, {}),
    (RewardConfig, "omega1", 1.5, {}),
    (RewardConfig, "omega2", NAN, {}),
    (RewardConfig, "omega2", True, {}),
    (RewardConfig, "fairness_weight", 2.0, {}),
    (RewardConfig, "fairness_weight", INF, {}),
]


@pytest.mark.parametrize(
    ("cls", "name", "value", "extra"), CASES,
    ids=[f"{c.__name__}.{n}={v!r}" for c, n, v, _ in CASES])
def test_invalid_value_raises_config_error_naming_field_value_and_allowed(cls, name, value, extra):
    with pytest.raises(ConfigError) as info:
        cls(**{name: value}, **extra)
    message = str(info.value)
    assert f"{cls.__name__}.{name}" in message
    assert repr(value) in message
    head, sep, allowed = message.partition("allowed")
    assert sep and allowed.strip(" :"), message


def test_config_error_is_a_value_error():
    assert issubclass(ConfigError, ValueError)


def test_configs_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        CellConfig().n_rbgs = 5  # type: ignore[misc]


# ------------------------------------------------------------------------------- from_dict
def test_to_dict_from_dict_round_trip_is_identity():
    scenario = ScenarioConfig(
        cell=CellConfig(n_rbgs=6, ue_counts=(2, 7), ue_probs=(0.4, 0.6), tbler=0.2,
                        join_prob=0.05, leave_prob=0.02),
        traffic=TrafficConfig(models=("periodic", "bursty"), bernoulli_rates=(0.3,),
                              period_ttis=3),
        channel=ChannelConfig(stay_prob=0.6, csi_delay_ttis=3, initial="uniform"),
        reward=RewardConfig(omega1=0.7, omega2=0.3, fairness_weight=0.1),
    )
    assert ScenarioConfig.from_dict(scenario.to_dict()) == scenario


def test_from_dict_of_nothing_gives_defaults():
    assert ScenarioConfig.from_dict(None) == ScenarioConfig()
    assert ScenarioConfig.from_dict({}) == ScenarioConfig()
    assert ScenarioConfig.from_dict({"cell": None}) == ScenarioConfig()


def test_from_dict_turns_yaml_lists_into_tuples():
    scenario = ScenarioConfig.from_dict({
        "cell": {"ue_counts": [2, 3], "ue_probs": [0.5, 0.5]},
        "traffic": {"models": ["bernoulli", "periodic"], "bernoulli_rates": [0.1, 0.9]},
        "channel": {"spectral_efficiency": [0.1, 0.2, 0.3]},
    })
    assert scenario.cell.ue_counts == (2, 3)
    assert scenario.cell.ue_probs == (0.5, 0.5)
    assert scenario.traffic.models == ("bernoulli", "periodic")
    assert scenario.traffic.bernoulli_rates == (0.1, 0.9)
    assert scenario.channel.spectral_efficiency == (0.1, 0.2, 0.3)
    hash(scenario)  # only hashable (tuple) values remain


def test_from_dict_keeps_unspecified_fields_at_their_defaults():
    scenario = ScenarioConfig.from_dict({"cell": {"n_rbgs": 8}})
    assert scenario.cell == CellConfig(n_rbgs=8)
    assert scenario.traffic == TrafficConfig()


def test_from_dict_with_more_ues_than_the_default_derives_max_ues():
    # design §2: "evaluate 2..10" UEs; max_ues is unset, so it follows the new ue_counts.
    scenario = ScenarioConfig.from_dict({"cell": {"ue_counts": list(range(2, 11))}})
    assert scenario.cell.ue_counts == tuple(range(2, 11))
    assert scenario.cell.max_ues == 10


def test_with_ue_counts_fixes_i_and_rederives_the_padding():
    base = ScenarioConfig.from_dict({"cell": {"ue_counts": [2, 7], "ue_probs": [0.5, 0.5],
                                              "max_ues": 9}, "traffic": {"models": ["periodic"]}})
    fixed = base.with_ue_counts((5,), n_rbgs=6)
    assert (fixed.cell.ue_counts, fixed.cell.ue_probs, fixed.cell.max_ues) == ((5,), None, 5)
    assert fixed.cell.n_rbgs == 6 and fixed.traffic == base.traffic
    assert base.cell.with_ue_counts([3], max_ues=9).max_ues == 9  # padding only when asked
    with pytest.raises(ConfigError, match=r"CellConfig.ue_counts = \(0,\) is invalid"):
        base.with_ue_counts((0,))


def test_from_dict_rejects_an_unknown_section_by_name():
    with pytest.raises(ConfigError, match="ScenarioConfig.radio"):
        ScenarioConfig.from_dict({"radio": {"n_rbgs": 4}})


@pytest.mark.parametrize(
    ("section", "owner"),
    [("cell", "CellConfig"), ("traffic", "TrafficConfig"), ("channel", "ChannelConfig"),
     ("reward", "RewardConfig")])
def test_from_dict_rejects_an_unknown_field_by_name(section, owner):
    with pytest.raises(ConfigError, match=rf"{owner}\.bogus_field = 7"):
        ScenarioConfig.from_dict({section: {"bogus_field": 7}})


def test_from_dict_rejects_a_section_that_is_not_a_mapping():
    with pytest.raises(ConfigError, match=r"ScenarioConfig\.cell = \[4, 4\]"):
        ScenarioConfig.from_dict({"cell": [4, 4]})


def test_from_dict_validates_values():
    with pytest.raises(ConfigError, match=r"CellConfig\.tbler = 1\.0"):
        ScenarioConfig.from_dict({"cell": {"tbler": 1.0}})


def test_scenario_rejects_a_spectral_efficiency_that_gives_an_empty_rbg():
    # eq. 1 with one RB: floor(1 * 12 * 14 * 0.005) = floor(0.84) = 0 bits per RBG
    with pytest.raises(ConfigError, match="spectral_efficiency"):
        ScenarioConfig(cell=CellConfig(rbs_per_rbg=1),
                       channel=ChannelConfig(spectral_efficiency=(0.005, 0.3, 0.6)))
    # floor(168 * 0.006) = floor(1.008) = 1 bit is allowed
    ScenarioConfig(cell=CellConfig(rbs_per_rbg=1),
                   channel=ChannelConfig(spectral_efficiency=(0.006, 0.3, 0.6)))
