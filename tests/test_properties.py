"""Invariants of the uplink cell over random scenarios and random bitmaps (hypothesis)."""

from __future__ import annotations

import dataclasses
from collections import defaultdict

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from textgame.config import (
    TRAFFIC_MODELS,
    CellConfig,
    ChannelConfig,
    ScenarioConfig,
    TrafficConfig,
)
from textgame.simulator import COLLISION, ERASURE, IDLE, SUCCESS, UplinkSimulator
from textgame.utilities import jain_index

FAST = settings(max_examples=40, deadline=None, database=None)


@st.composite
def scenarios(draw) -> ScenarioConfig:
    max_ues = draw(st.integers(1, 12))
    counts = draw(st.lists(st.integers(1, max_ues), min_size=1, max_size=4, unique=True))
    churn = draw(st.booleans())
    cell = CellConfig(
        n_rbgs=draw(st.integers(1, 8)),
        rbs_per_rbg=draw(st.integers(1, 4)),
        episode_ttis=draw(st.integers(1, 15)),
        dpdu_bits=draw(st.sampled_from([64, 256, 700])),
        buffer_dpdus=draw(st.integers(1, 8)),
        tbler=draw(st.sampled_from([0.0, 0.01, 0.3, 0.8])),
        ue_counts=tuple(counts),
        max_ues=max_ues,
        join_prob=draw(st.floats(0.0, 0.5)) if churn else 0.0,
        leave_prob=draw(st.floats(0.0, 0.5)) if churn else 0.0,
    )
    traffic = TrafficConfig(
        models=tuple(draw(st.lists(st.sampled_from(TRAFFIC_MODELS), min_size=1, max_size=3))),
        bernoulli_rates=tuple(draw(st.lists(st.floats(0.0, 1.0), min_size=1, max_size=3))),
        period_ttis=draw(st.integers(1, 5)),
        on_ttis=draw(st.integers(1, 4)),
        off_ttis=draw(st.integers(0, 4)),
        burst_dpdus=draw(st.integers(1, 6)),
    )
    dwell = draw(st.floats(0.5, 3.0))
    channel = ChannelConfig(
        stay_prob=draw(st.floats(0.0, 1.0)), dwell_min_ms=dwell, dwell_max_ms=dwell + 1.0,
        csi_delay_ttis=draw(st.integers(0, 3)),
        initial=draw(st.sampled_from(["stationary", "uniform"])))
    return ScenarioConfig(cell=cell, traffic=traffic, channel=channel)


@dataclasses.dataclass
class Episode:
    sim: UplinkSimulator
    reports: list
    buffered_before: list  # (B, I_max) bits buffered when each TTI's transmission starts


def run_episode(scenario: ScenarioConfig, n_envs: int, seed: int, tx_prob: float) -> Episode:
    sim = UplinkSimulator(scenario, n_envs)
    sim.reset(seed)
    rng = np.random.default_rng(seed + 1)
    shape = (n_envs, sim.max_ues, sim.n_rbgs)
    reports, buffered = [], []
    while True:
        buffered.append(sim.buffers.bits.copy())
        report = sim.step(rng.random(shape) < tx_prob)
        reports.append(report)
        if report.done:
            return Episode(sim, reports, buffered)


episodes = st.builds(run_episode, scenarios(), st.integers(1, 3), st.integers(0, 2**31),
                     st.floats(0.0, 1.0))


# ------------------------------------------------------------------------------ bits
@FAST
@given(episodes)
def test_bits_are_conserved_per_ue_slot(episode):
    d = episode.sim.cell.dpdu_bits
    arrived = sum(r.arrived_dpdus for r in episode.reports) * d
    delivered = sum(r.delivered_bits for r in episode.reports)
    dropped = sum(r.dropped_dpdus for r in episode.reports) * d
    departed = sum(r.departed_bits for r in episode.reports)
    np.testing.assert_array_equal(
        arrived, delivered + episode.sim.buffers.bits + dropped + departed)


@FAST
@given(episodes)
def test_delivered_bits_are_capacity_of_successes_capped_by_the_buffer(episode):
    for report, buffered in zip(episode.reports, episode.buffered_before, strict=True):
        np.testing.assert_array_equal(
            report.delivered_bits,
            np.minimum(report.successes * report.capacity_bits, buffered))
        assert (report.carried_rbgs <= report.successes).all()
        assert (report.successes <= report.attempts).all()


# -------------------------------------------------------------------------- outcomes
@FAST
@given(episodes)
def test_rbg_outcome_follows_the_number_of_transmitters(episode):
    for report in episode.reports:
        senders = report.transmitted.sum(axis=1)  # (B, N)
        outcome = report.rbg_outcome
        np.testing.assert_array_equal(outcome == IDLE, senders == 0)
        np.testing.assert_array_equal(outcome == COLLISION, senders >= 2)
        np.testing.assert_array_equal((outcome == SUCCESS) | (outcome == ERASURE), senders == 1)
        if episode.sim.cell.tbler == 0.0:
            assert not (outcome == ERASURE).any()


@FAST
@given(episodes)
def test_collided_rbgs_never_deliver(episode):
    for report in episode.reports:
        tx = report.transmitted
        np.testing.assert_array_equal(
            report.feedback, np.where(tx, report.rbg_outcome[:, None, :], IDLE))
        success = report.feedback == SUCCESS
        collision = report.feedback == COLLISION
        assert not (success & collision).any()
        np.testing.assert_array_equal(report.successes, success.sum(axis=-1))
        np.testing.assert_array_equal(report.attempts, tx.sum(axis=-1))
        all_collided = (tx == collision).all(axis=-1)  # every transmitted RBG collided
        assert not report.delivered_bits[all_collided].any()
        assert not report.delivered_bits[report.successes == 0].any()
        assert not report.transmitted[~report.active].any()


# ------------------------------------------------------------------------ deliveries
@FAST
@given(episodes)
def test_deliveries_have_non_negative_latencies_and_fifo_order(episode):
    last_arrival = defaultdict(lambda: -1)
    for report in episode.reports:
        deliveries = report.deliveries
        np.testing.assert_array_equal(deliveries.latency, report.t - deliveries.arrival)
        assert (deliveries.latency >= 0).all()
        per_ue = np.zeros_like(report.completed_dpdus)
        np.add.at(per_ue, (deliveries.env, deliveries.ue), 1)
        np.testing.assert_array_equal(per_ue, report.completed_dpdus)
        for env, ue, arrival in zip(deliveries.env, deliveries.ue, deliveries.arrival,
                                    strict=True):
            assert arrival >= last_arrival[env, ue]  # within the TTI and across TTIs
            last_arrival[env, ue] = arrival


# ------------------------------------------------------------------------------- JFI
@FAST
@given(st.integers(1, 12).flatmap(lambda n: st.tuples(
    st.lists(st.integers(0, 50), min_size=n, max_size=n),
    st.lists(st.booleans(), min_size=n, max_size=n))))
def test_jain_index_lies_between_one_over_i_and_one_or_is_zero(data):
    served, mask = np.array(data[0]), np.array(data[1])
    jfi = float(jain_index(served, mask))
    active = int(mask.sum())
    if active == 0 or served[mask].sum() == 0:
        assert jfi == 0.0
    else:
        assert 1.0 / active - 1e-12 <= jfi <= 1.0 + 1e-12


@FAST
@given(st.integers(1, 12), st.integers(1, 1000))
def test_jain_index_of_equal_shares_is_one_and_of_a_single_share_is_one_over_i(n, value):
    assert jain_index(np.full(n, value)) == 1.0
    single = np.zeros(n)
    single[0] = value
    assert jain_index(single) == 1.0 / n  # both are the correctly rounded 1/n


@FAST
@given(episodes)
def test_jain_index_of_carried_rbgs_respects_its_bounds_during_an_episode(episode):
    served = sum(r.carried_rbgs for r in episode.reports)
    active = episode.reports[-1].active
    jfi = jain_index(served, active)
    anything = np.where(active, served, 0).sum(axis=-1) > 0
    n = active.sum(axis=-1)
    assert (jfi[~anything] == 0.0).all()
    assert (jfi[anything] >= 1.0 / n[anything] - 1e-12).all()
    assert (jfi[anything] <= 1.0 + 1e-12).all()


# ----------------------------------------------------------------------------- seeds
def report_arrays(report) -> list[np.ndarray]:
    arrays = []
    for f in dataclasses.fields(report):
        value = getattr(report, f.name)
        if f.name == "deliveries":
            arrays += [getattr(value, g.name) for g in dataclasses.fields(value)]
        else:
            arrays.append(np.asarray(value))
    return arrays


@FAST
@given(scenarios(), st.integers(1, 3), st.integers(0, 2**31), st.floats(0.0, 1.0))
def test_the_same_seed_gives_an_identical_trajectory(scenario, n_envs, seed, tx_prob):
    first = run_episode(scenario, n_envs, seed, tx_prob)
    second = run_episode(scenario, n_envs, seed, tx_prob)
    for a, b in zip(first.reports, second.reports, strict=True):
        for x, y in zip(report_arrays(a), report_arrays(b), strict=True):
            np.testing.assert_array_equal(x, y)


@settings(max_examples=20, deadline=None, database=None)
@given(st.lists(st.integers(0, 2**31), min_size=2, max_size=2, unique=True))
def test_different_seeds_give_different_trajectories(seeds):
    # the default scenario draws I, arrivals, channel states and erasures at random
    scenario = ScenarioConfig(cell=CellConfig(episode_ttis=20))
    first, second = (run_episode(scenario, 2, seed, 0.3) for seed in seeds)
    differs = any(
        not np.array_equal(x, y)
        for a, b in zip(first.reports, second.reports, strict=True)
        for x, y in zip(report_arrays(a), report_arrays(b), strict=True))
    assert differs
