"""The numeric uplink cell (design §2): eq. 1, collisions, erasures, ARQ, traffic, channel, churn.

Deterministic cases use tbler = 0, ``stay_prob = 1`` and, where a capacity has to be known in
advance, the same spectral efficiency for all three channel states.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from textgame.channel import MarkovChannel
from textgame.config import CellConfig, ChannelConfig, ConfigError, ScenarioConfig, TrafficConfig
from textgame.simulator import COLLISION, ERASURE, IDLE, SUCCESS, UplinkSimulator

D = 256  # design default dPDU size
SE_POOR, SE_MEDIUM, SE_GOOD = 0.2344, 0.3770, 0.6016
# eq. 1 with n_RB = 4: 4 * 12 * 14 = 672 resource elements per RBG per TTI
C_POOR = 157  # floor(672 * 0.2344) = floor(157.5168)
C_MEDIUM = 253  # floor(672 * 0.3770) = floor(253.344)
C_GOOD = 404  # floor(672 * 0.6016) = floor(404.2752)


def make_sim(*, n_envs: int = 1, seed: int = 0, cell: dict | None = None,
             traffic: dict | None = None, channel: dict | None = None) -> UplinkSimulator:
    scenario = ScenarioConfig(cell=CellConfig(**(cell or {})),
                              traffic=TrafficConfig(**(traffic or {})),
                              channel=ChannelConfig(**(channel or {})))
    sim = UplinkSimulator(scenario, n_envs)
    sim.reset(seed)
    return sim


def fixed_channel(se: float) -> dict:
    """A channel whose three states share one spectral efficiency and never change."""
    return {"spectral_efficiency": (se, se, se), "stay_prob": 1.0}


EVERY_TTI = {"models": ("periodic",), "period_ttis": 1}  # one dPDU per UE in every TTI
ALWAYS = {"bernoulli_rates": (1.0,)}  # Bernoulli with lambda = 1: also one dPDU per TTI
NEVER = {"bernoulli_rates": (0.0,)}  # no traffic at all


def bitmap(*rows: str) -> np.ndarray:
    """Bitmaps of one environment from strings, one per UE slot: (1, I_max, N)."""
    return np.array([[[c == "1" for c in row] for row in rows]])


def silence(sim: UplinkSimulator) -> np.ndarray:
    return np.zeros((sim.n_envs, sim.max_ues, sim.n_rbgs), dtype=bool)


# ------------------------------------------------------------------------------ eq. 1
def test_rbg_capacity_per_state_is_floor_of_672_times_eta():
    sim = make_sim()
    assert sim.rbg_bits.tolist() == [C_POOR, C_MEDIUM, C_GOOD]
    assert sim.max_rbg_bits == C_GOOD


def test_rbg_capacity_scales_with_rbs_per_rbg():
    # 2 * 12 * 14 = 336: floor(78.7584), floor(126.672), floor(202.1376)
    assert make_sim(cell={"rbs_per_rbg": 2}).rbg_bits.tolist() == [78, 126, 202]


def test_capacity_of_each_ue_follows_its_true_channel_state():
    sim = make_sim(n_envs=8, channel={"initial": "uniform"})
    by_state = np.array([C_POOR, C_MEDIUM, C_GOOD])
    for _ in range(5):
        expected = by_state[sim.channel.state]
        np.testing.assert_array_equal(sim.capacity(), expected)
        report = sim.step(silence(sim))
        np.testing.assert_array_equal(report.capacity_bits, expected)


# ------------------------------------------------------------------- transmission outcomes
@pytest.mark.parametrize(("se", "delivered"), [(SE_POOR, C_POOR), (SE_MEDIUM, C_MEDIUM),
                                               (SE_GOOD, D)])
def test_lone_transmitter_delivers_min_of_capacity_and_buffered_bits(se, delivered):
    sim = make_sim(cell={"ue_counts": (1,), "tbler": 0.0}, traffic=EVERY_TTI,
                   channel=fixed_channel(se))
    report = sim.step(bitmap("1000"))
    assert report.rbg_outcome.tolist() == [[SUCCESS, IDLE, IDLE, IDLE]]
    assert report.feedback[0, 0].tolist() == [SUCCESS, IDLE, IDLE, IDLE]
    assert report.delivered_bits[0, 0] == delivered
    assert report.successes[0, 0] == 1 and report.attempts[0, 0] == 1
    assert report.carried_rbgs[0, 0] == 1


def test_dpdu_received_in_its_arrival_tti_has_latency_zero():
    sim = make_sim(cell={"ue_counts": (1,), "tbler": 0.0}, traffic=EVERY_TTI,
                   channel=fixed_channel(SE_GOOD))
    report = sim.step(bitmap("0100"))
    assert report.completed_dpdus[0, 0] == 1
    assert report.deliveries.arrival.tolist() == [0]
    assert report.deliveries.latency.tolist() == [0]


def test_two_transmitters_on_an_rbg_collide_and_nothing_is_delivered():
    sim = make_sim(cell={"ue_counts": (2,), "tbler": 0.0}, traffic=ALWAYS,
                   channel=fixed_channel(SE_POOR))
    report = sim.step(bitmap("1000", "1000"))
    assert report.rbg_outcome.tolist() == [[COLLISION, IDLE, IDLE, IDLE]]
    assert report.feedback[0].tolist() == [[COLLISION, IDLE, IDLE, IDLE]] * 2
    assert report.delivered_bits.tolist() == [[0, 0]]
    assert report.successes.tolist() == [[0, 0]]
    assert report.attempts.tolist() == [[1, 1]]
    assert report.completed_dpdus.tolist() == [[0, 0]]


def test_collided_rbg_fails_while_the_lone_rbgs_of_the_same_ues_succeed():
    sim = make_sim(cell={"ue_counts": (2,), "tbler": 0.0}, traffic=ALWAYS,
                   channel=fixed_channel(SE_POOR))
    report = sim.step(bitmap("1100", "0110"))
    assert report.rbg_outcome.tolist() == [[SUCCESS, COLLISION, SUCCESS, IDLE]]
    assert report.feedback[0, 0].tolist() == [SUCCESS, COLLISION, IDLE, IDLE]
    assert report.feedback[0, 1].tolist() == [IDLE, COLLISION, SUCCESS, IDLE]
    assert report.delivered_bits.tolist() == [[C_POOR, C_POOR]]  # one successful RBG each
    assert report.attempts.tolist() == [[2, 2]]
    assert report.successes.tolist() == [[1, 1]]


def test_rbgs_nobody_transmits_on_are_idle():
    sim = make_sim(n_envs=2, cell={"ue_counts": (3,)}, traffic=ALWAYS)
    report = sim.step(silence(sim))
    assert (report.rbg_outcome == IDLE).all()
    assert (report.feedback == IDLE).all()
    assert not report.attempts.any() and not report.delivered_bits.any()


def test_inactive_ue_slot_transmits_nothing():
    sim = make_sim(cell={"ue_counts": (1,), "max_ues": 2, "tbler": 0.0}, traffic=ALWAYS,
                   channel=fixed_channel(SE_POOR))
    report = sim.step(bitmap("1000", "1111"))
    assert report.active.tolist() == [[True, False]]
    assert report.transmitted[0, 1].tolist() == [False] * 4
    assert report.rbg_outcome.tolist() == [[SUCCESS, IDLE, IDLE, IDLE]]
    assert report.attempts.tolist() == [[1, 0]]


def test_tbler_near_one_erases_every_lone_transmission():
    sim = make_sim(n_envs=3, cell={"ue_counts": (2,), "tbler": 0.999999, "episode_ttis": 20},
                   traffic=ALWAYS)
    rows = np.broadcast_to(bitmap("1100", "0010"), (3, 2, 4))
    for _ in range(20):
        report = sim.step(rows)
        assert (report.rbg_outcome == [ERASURE, ERASURE, ERASURE, IDLE]).all()
        assert (report.feedback[:, 0] == [ERASURE, ERASURE, IDLE, IDLE]).all()
        assert (report.feedback[:, 1] == [IDLE, IDLE, ERASURE, IDLE]).all()
        assert not report.delivered_bits.any() and not report.successes.any()
        assert (report.attempts == [2, 1]).all()


def test_erasure_frequency_matches_tbler():
    tbler, n_envs, ttis = 0.3, 100, 50
    sim = make_sim(n_envs=n_envs, cell={"ue_counts": (1,), "tbler": tbler, "episode_ttis": ttis})
    erased = 0
    for _ in range(ttis):
        erased += (sim.step(np.ones((n_envs, 1, 4))).rbg_outcome == ERASURE).sum()
    draws = n_envs * ttis * 4
    # five binomial standard deviations: sqrt(0.3 * 0.7 / 20000) = 0.0032
    assert abs(erased / draws - tbler) < 5 * math.sqrt(tbler * (1 - tbler) / draws)


def test_padding_counts_an_attempt_but_delivers_nothing():
    sim = make_sim(cell={"ue_counts": (1,), "tbler": 0.0}, traffic=NEVER)
    report = sim.step(bitmap("0110"))
    assert report.rbg_outcome.tolist() == [[IDLE, SUCCESS, SUCCESS, IDLE]]
    assert report.attempts[0, 0] == 2
    assert report.successes[0, 0] == 2
    assert report.delivered_bits[0, 0] == 0
    assert report.carried_rbgs[0, 0] == 0


def test_padding_occupies_the_rbg_and_collides_with_data():
    # slot 0 has lambda = 0 (empty buffer), slot 1 lambda = 1 (one dPDU buffered)
    sim = make_sim(cell={"ue_counts": (2,), "tbler": 0.0},
                   traffic={"bernoulli_rates": (0.0, 1.0)})
    assert sim.buffers.bits.tolist() == [[0, D]]
    report = sim.step(bitmap("1000", "1000"))
    assert report.rbg_outcome.tolist() == [[COLLISION, IDLE, IDLE, IDLE]]
    assert report.delivered_bits.tolist() == [[0, 0]]


def test_only_rbgs_that_carry_data_count_as_carried():
    # 256 buffered bits over RBGs of 157 bits: ceil(256 / 157) = 2 of the 3 successes carry data
    sim = make_sim(cell={"ue_counts": (1,), "tbler": 0.0}, traffic=EVERY_TTI,
                   channel=fixed_channel(SE_POOR))
    report = sim.step(bitmap("1101"))
    assert report.successes[0, 0] == 3
    assert report.delivered_bits[0, 0] == D
    assert report.carried_rbgs[0, 0] == 2


# ------------------------------------------------------------------------------ ARQ / FIFO
def test_arq_drains_a_partly_sent_head_across_ttis():
    # One dPDU arrives per TTI; one RBG of 157 bits per TTI. After TTI t, 157 (t + 1) bits are
    # delivered, so dPDU k (arrived at k) completes at the first t with 157 (t+1) >= 256 (k+1):
    # k=0: 314 >= 256 at t=1; k=1: 628 >= 512 at t=3; k=2: 785 >= 768 at t=4;
    # k=3: 1099 >= 1024 at t=6; k=4: 1413 >= 1280 at t=8.
    sim = make_sim(cell={"ue_counts": (1,), "tbler": 0.0, "episode_ttis": 9},
                   traffic=EVERY_TTI, channel=fixed_channel(SE_POOR))
    completions, head_sent, occupancy = {}, [], []
    for t in range(9):
        report = sim.step(bitmap("1000"))
        assert report.delivered_bits[0, 0] == C_POOR
        if report.completed_dpdus[0, 0]:
            completions[t] = (report.deliveries.arrival.tolist(),
                              report.deliveries.latency.tolist())
        head_sent.append(int(sim.buffers.head_sent[0, 0]))
        occupancy.append(int(report.buffer_dpdus[0, 0]))
    assert completions == {1: ([0], [1]), 3: ([1], [2]), 4: ([2], [2]), 6: ([3], [3]),
                           8: ([4], [4])}
    # bits of the head already sent: 157 (t + 1) - 256 * (dPDUs completed by t)
    assert head_sent == [157, 58, 215, 116, 17, 174, 75, 232, 133]
    # dPDUs held after delivery: (t + 1) arrivals minus completions
    assert occupancy == [1, 1, 2, 2, 2, 3, 3, 4, 4]
    assert report.done


def test_deliveries_leave_in_fifo_order_with_their_latencies():
    # six dPDUs (t = 0..5) = 1536 bits fit in four RBGs of 404 bits = 1616 bits
    sim = make_sim(cell={"ue_counts": (1,), "tbler": 0.0}, traffic=ALWAYS,
                   channel=fixed_channel(SE_GOOD))
    for _ in range(5):
        sim.step(silence(sim))
    report = sim.step(bitmap("1111"))
    assert report.t == 5
    assert report.delivered_bits[0, 0] == 6 * D
    assert report.deliveries.arrival.tolist() == [0, 1, 2, 3, 4, 5]
    assert report.deliveries.latency.tolist() == [5, 4, 3, 2, 1, 0]
    assert report.deliveries.ue.tolist() == [0] * 6
    assert report.carried_rbgs[0, 0] == 4  # ceil(1536 / 404)
    assert report.buffer_dpdus[0, 0] == 0


def test_full_buffer_drops_and_counts_new_arrivals():
    sim = make_sim(cell={"ue_counts": (1,), "buffer_dpdus": 3, "episode_ttis": 6}, traffic=ALWAYS)
    reports = [sim.step(silence(sim)) for _ in range(6)]
    assert [int(r.arrived_dpdus[0, 0]) for r in reports] == [1] * 6
    assert [int(r.dropped_dpdus[0, 0]) for r in reports] == [0, 0, 0, 1, 1, 1]
    assert [int(r.buffer_dpdus[0, 0]) for r in reports] == [1, 2, 3, 3, 3, 3]


def test_overflow_drops_the_newest_dpdus_and_keeps_the_queued_ones():
    sim = make_sim(cell={"ue_counts": (1,), "buffer_dpdus": 3, "tbler": 0.0}, traffic=ALWAYS,
                   channel=fixed_channel(SE_GOOD))
    for _ in range(5):
        sim.step(silence(sim))
    report = sim.step(bitmap("1111"))
    assert report.deliveries.arrival.tolist() == [0, 1, 2]


def test_a_burst_larger_than_the_buffer_is_truncated():
    # ON = 1, OFF = 0: a burst of S = 5 opens every TTI; Q = 3
    sim = make_sim(cell={"ue_counts": (1,), "buffer_dpdus": 3},
                   traffic={"models": ("bursty",), "on_ttis": 1, "off_ttis": 0,
                            "burst_dpdus": 5})
    first = sim.step(silence(sim))
    second = sim.step(silence(sim))
    assert (first.arrived_dpdus[0, 0], first.dropped_dpdus[0, 0]) == (5, 2)
    assert (second.arrived_dpdus[0, 0], second.dropped_dpdus[0, 0]) == (5, 5)


# -------------------------------------------------------------------------------- traffic
def test_bernoulli_arrival_rates_match_lambda_assigned_cyclically():
    n_envs, ttis = 50, 200
    sim = make_sim(n_envs=n_envs, seed=1, cell={"ue_counts": (5,), "episode_ttis": ttis})
    arrived = np.zeros(5)
    for _ in range(ttis):
        arrived += sim.step(silence(sim)).arrived_dpdus.sum(axis=0)
    rates = np.array([0.2, 0.5, 0.8, 0.2, 0.5])  # slot i gets (0.2, 0.5, 0.8)[i % 3]
    n = n_envs * ttis
    # five binomial standard deviations of the mean over n = 10 000 TTIs: at most 0.025
    tolerance = 5 * np.sqrt(rates * (1 - rates) / n)
    assert (np.abs(arrived / n - rates) < tolerance).all()


def test_periodic_ue_receives_one_dpdu_exactly_every_p_ttis():
    period, ttis = 4, 40
    sim = make_sim(n_envs=4, seed=2, cell={"ue_counts": (6,), "episode_ttis": ttis},
                   traffic={"models": ("periodic",), "period_ttis": period})
    arrivals = np.stack([sim.step(silence(sim)).arrived_dpdus for _ in range(ttis)])  # (T, B, I)
    firsts = set()
    for env in range(4):
        for ue in range(6):
            times = np.flatnonzero(arrivals[:, env, ue])
            assert arrivals[times, env, ue].tolist() == [1] * len(times)
            assert times[0] < period
            assert np.diff(times).tolist() == [period] * (len(times) - 1)
            assert len(times) == ttis // period
            # eq. 48: an arrival when (t + offset_i) mod P == 0
            assert (times[0] + sim.traffic.offset[env, ue]) % period == 0
            firsts.add(int(times[0]))
    assert len(firsts) > 1  # phases are drawn per UE, not shared


def test_bursty_ue_receives_s_dpdus_at_the_start_of_each_on_period():
    on, off, burst, ttis = 3, 5, 4, 40
    cycle = on + off
    sim = make_sim(n_envs=3, seed=3, cell={"ue_counts": (4,), "episode_ttis": ttis},
                   traffic={"models": ("bursty",), "on_ttis": on, "off_ttis": off,
                            "burst_dpdus": burst})
    arrivals = np.stack([sim.step(silence(sim)).arrived_dpdus for _ in range(ttis)])
    for env in range(3):
        for ue in range(4):
            times = np.flatnonzero(arrivals[:, env, ue])
            assert arrivals[times, env, ue].tolist() == [burst] * (ttis // cycle)
            assert times[0] < cycle
            assert np.diff(times).tolist() == [cycle] * (ttis // cycle - 1)


def test_traffic_models_are_assigned_to_ue_slots_cyclically():
    sim = make_sim(n_envs=2, cell={"ue_counts": (4,), "episode_ttis": 24},
                   traffic={"models": ("periodic", "bursty"), "period_ttis": 3,
                            "on_ttis": 2, "off_ttis": 4, "burst_dpdus": 5})
    arrivals = np.stack([sim.step(silence(sim)).arrived_dpdus for _ in range(24)])
    for ue, (size, count) in enumerate([(1, 8), (5, 4), (1, 8), (5, 4)]):
        for env in range(2):
            nonzero = arrivals[:, env, ue][arrivals[:, env, ue] > 0]
            assert nonzero.tolist() == [size] * count


def test_inactive_slots_receive_no_traffic():
    sim = make_sim(n_envs=4, cell={"ue_counts": (2,), "max_ues": 5}, traffic=ALWAYS)
    for _ in range(10):
        report = sim.step(silence(sim))
        assert not report.arrived_dpdus[:, 2:].any()
        assert (report.arrived_dpdus[:, :2] == 1).all()


# -------------------------------------------------------------------------------- channel
def test_channel_never_changes_when_the_dtmc_always_stays():
    sim = make_sim(n_envs=10, cell={"episode_ttis": 50},
                   channel={"stay_prob": 1.0, "initial": "uniform",
                            "dwell_min_ms": 0.5, "dwell_max_ms": 0.5})
    initial = sim.channel.state.copy()
    assert len(np.unique(initial)) == 3
    for _ in range(49):
        sim.step(silence(sim))
        np.testing.assert_array_equal(sim.channel.state, initial)


def test_empirical_transition_frequencies_match_the_matrix():
    # a dwell time of exactly one TTI makes the DTMC transition at every TTI boundary
    config = ChannelConfig(dwell_min_ms=0.5, dwell_max_ms=0.5)
    channel = MarkovChannel(config, tti_ms=0.5)
    rng = np.random.default_rng(4)
    channel.reset(rng, (200, 10))
    counts = np.zeros((3, 3))
    for t in range(1, 101):
        before = channel.state.copy()
        channel.advance(rng, t)
        np.add.at(counts, (before.ravel(), channel.state.ravel()), 1)
    matrix = np.array([[0.8, 0.2, 0.0], [0.1, 0.8, 0.1], [0.0, 0.2, 0.8]])
    visits = counts.sum(axis=1, keepdims=True)
    assert counts[0, 2] == 0 and counts[2, 0] == 0  # poor and good are not neighbours
    tolerance = 5 * np.sqrt(matrix * (1 - matrix) / visits)  # five binomial std per entry
    assert (np.abs(counts / visits - matrix) <= tolerance).all()


def test_dtmc_transitions_happen_only_when_the_dwell_time_runs_out():
    # dwell 2 ms = 4 TTIs of 0.5 ms; stay_prob 0 makes every transition change the state
    sim = make_sim(n_envs=5, cell={"episode_ttis": 30},
                   channel={"stay_prob": 0.0, "dwell_min_ms": 2.0, "dwell_max_ms": 2.0})
    previous = sim.channel.state.copy()
    for t in range(1, 30):
        sim.step(silence(sim))
        changed = sim.channel.state != previous
        assert changed.all() if t % 4 == 0 else not changed.any()
        previous = sim.channel.state.copy()


def test_dwell_times_are_uniform_between_1_and_5_ms():
    # mean dwell 3 ms = 6 TTIs: in 400 TTIs (200 ms) a renewal process of U[1, 5] ms dwells makes
    # about 200/3 + (var - mean^2) / (2 mean^2) = 66.67 - 0.43 = 66.2 transitions per UE
    sim = make_sim(n_envs=200, cell={"episode_ttis": 401}, channel={"stay_prob": 0.0})
    assert ((sim.channel.dwell_ms >= 1.0) & (sim.channel.dwell_ms <= 5.0)).all()
    changes = np.zeros(sim.channel.state.shape)
    previous = sim.channel.state.copy()
    for _ in range(400):
        sim.step(silence(sim))
        changes += sim.channel.state != previous
        previous = sim.channel.state.copy()
    # the mean over 1000 UEs has a standard deviation of about 0.1 (renewal CLT)
    assert changes.mean() == pytest.approx(66.2, rel=0.01)


@pytest.mark.parametrize("delay", [0, 1, 3])
def test_bs_sees_the_channel_state_delta_ttis_old(delay):
    ttis = 30
    sim = make_sim(n_envs=4, cell={"episode_ttis": ttis},
                   channel={"csi_delay_ttis": delay, "stay_prob": 0.4,
                            "dwell_min_ms": 0.5, "dwell_max_ms": 0.5})
    true, seen = [], []
    for _ in range(ttis):
        true.append(sim.channel.state.copy())
        seen.append(sim.channel.csi(sim.t).copy())
        sim.step(silence(sim))
    for t in range(ttis):
        np.testing.assert_array_equal(seen[t], true[max(t - delay, 0)])
    assert any((true[t] != true[0]).any() for t in range(ttis))
    stale = any((seen[t] != true[t]).any() for t in range(ttis))
    assert stale == (delay > 0)


# ---------------------------------------------------------------------- UE population, churn
def test_ue_count_is_drawn_uniformly_from_the_support_of_d_i():
    n_envs = 3000
    sim = make_sim(n_envs=n_envs, seed=5)
    counts = sim.active.sum(axis=1)
    for k in range(n_envs):
        assert sim.active[k, :counts[k]].all()  # the first I slots are the active ones
    values, freq = np.unique(counts, return_counts=True)
    assert values.tolist() == [3, 4, 5]
    p = 1 / 3
    assert (np.abs(freq / n_envs - p) < 5 * math.sqrt(p * (1 - p) / n_envs)).all()


def test_ue_count_follows_ue_probs():
    n_envs = 3000
    sim = make_sim(n_envs=n_envs, seed=6,
                   cell={"ue_counts": (1, 2, 4), "ue_probs": (0.2, 0.0, 0.8)})
    counts = sim.active.sum(axis=1)
    assert set(counts.tolist()) == {1, 4}
    share = (counts == 1).mean()
    assert abs(share - 0.2) < 5 * math.sqrt(0.2 * 0.8 / n_envs)


def test_ue_count_stays_fixed_for_the_episode_without_churn():
    sim = make_sim(n_envs=20)
    active = sim.active.copy()
    for _ in range(49):
        report = sim.step(np.ones((20, 5, 4)))
        np.testing.assert_array_equal(report.active, active)
        assert not report.joined.any() and not report.departed_bits.any()


def test_churn_makes_ues_join_and_leave():
    sim = make_sim(n_envs=10, seed=7, cell={"ue_counts": (2,), "max_ues": 6, "join_prob": 0.1,
                                            "leave_prob": 0.1, "episode_ttis": 60},
                   traffic=ALWAYS)
    joined = left = departed = 0
    for _ in range(59):
        before = sim.active.copy()
        report = sim.step(silence(sim))
        assert not (report.joined & before).any()  # only inactive slots join
        assert sim.active[report.joined].all()
        joined += report.joined.sum()
        left += (before & ~sim.active).sum()
        departed += report.departed_bits.sum()
        assert not report.departed_bits[sim.active].any()  # UEs that stay lose nothing
    assert joined > 0 and left > 0 and departed > 0


def test_churn_keeps_at_least_one_ue():
    sim = make_sim(n_envs=50, seed=8, cell={"ue_counts": (1, 2, 3), "join_prob": 0.05,
                                            "leave_prob": 0.9})
    for _ in range(49):
        report = sim.step(silence(sim))
        assert (report.active.sum(axis=1) >= 1).all()
        assert (sim.active.sum(axis=1) >= 1).all()


def test_joining_ue_starts_with_an_empty_buffer():
    sim = make_sim(n_envs=10, seed=9, cell={"ue_counts": (1,), "max_ues": 4, "join_prob": 0.2,
                                            "leave_prob": 0.2}, traffic=ALWAYS)
    seen = 0
    for _ in range(49):
        report = sim.step(silence(sim))
        # after a join the next TTI has opened: the newcomer holds only that TTI's arrival
        np.testing.assert_array_equal(sim.buffers.count[report.joined], 1)
        seen += report.joined.sum()
    assert seen > 0


# ------------------------------------------------------------------------- snapshots, seeds
def assert_reports_equal(a, b) -> None:
    for f in dataclasses.fields(a):
        x, y = getattr(a, f.name), getattr(b, f.name)
        if f.name == "deliveries":
            for g in dataclasses.fields(x):
                np.testing.assert_array_equal(getattr(x, g.name), getattr(y, g.name))
        else:
            np.testing.assert_array_equal(x, y, err_msg=f.name)


def churning_sim() -> UplinkSimulator:
    return make_sim(n_envs=3, seed=10,
                    cell={"ue_counts": (2, 3), "max_ues": 5, "tbler": 0.3, "join_prob": 0.1,
                          "leave_prob": 0.1, "buffer_dpdus": 4},
                    traffic={"models": ("bernoulli", "periodic", "bursty")})


def test_state_dict_resumes_an_identical_trajectory():
    sim = churning_sim()
    rng = np.random.default_rng(11)
    plans = rng.random((40, 3, 5, 4)) < 0.4
    for plan in plans[:15]:
        sim.step(plan)
    state = sim.state_dict()
    original = [sim.step(plan) for plan in plans[15:]]
    resumed = UplinkSimulator(sim.scenario, 3)
    resumed.load_state_dict(state)
    again = [resumed.step(plan) for plan in plans[15:]]
    for a, b in zip(original, again, strict=True):
        assert_reports_equal(a, b)


def test_reset_with_the_same_seed_replays_the_episode():
    sim = churning_sim()
    plans = np.random.default_rng(12).random((20, 3, 5, 4)) < 0.4
    sim.reset(13)
    first = [sim.step(plan) for plan in plans]
    sim.reset(13)
    second = [sim.step(plan) for plan in plans]
    for a, b in zip(first, second, strict=True):
        assert_reports_equal(a, b)


def test_episode_is_done_after_t_ttis():
    sim = make_sim(cell={"episode_ttis": 5})
    done = [sim.step(silence(sim)).done for _ in range(5)]
    assert done == [False, False, False, False, True]


def test_bitmap_of_the_wrong_shape_is_rejected():
    sim = make_sim(n_envs=2)
    with pytest.raises(ValueError, match=r"\(2, 5, 3\)"):
        sim.step(np.zeros((2, 5, 3)))


@pytest.mark.parametrize("entry", [2, -1, 0.5])
def test_bitmap_entry_other_than_zero_or_one_is_rejected_naming_it(entry):
    sim = make_sim(n_envs=2)
    plan = np.zeros((2, 5, 4))
    plan[1, 3, 2] = entry
    with pytest.raises(ValueError, match=rf"bitmap\[1, 3, 2\] = {entry}"):
        sim.step(plan)


@pytest.mark.parametrize("n_envs", [0, -1, True, 2.0])
def test_invalid_number_of_environments_is_rejected(n_envs):
    with pytest.raises(ValueError, match="n_envs"):
        UplinkSimulator(ScenarioConfig(), n_envs)


def test_when_every_ue_would_leave_the_lowest_active_slot_stays():
    scenario = ScenarioConfig(cell=CellConfig(ue_counts=(4,), leave_prob=1.0, join_prob=0.0))
    sim = UplinkSimulator(scenario, n_envs=3)
    sim.reset(seed=2)
    sim.step(np.zeros((3, 4, 4), dtype=bool))
    assert sim.active.tolist() == [[True, False, False, False]] * 3


def test_initial_channel_law_is_the_dtmc_stationary_law():
    from textgame.channel import stationary_distribution

    matrix = np.array(ChannelConfig().transition_matrix())
    assert np.allclose(stationary_distribution(matrix), [0.25, 0.5, 0.25], atol=1e-12)
    frozen = np.array(ChannelConfig(stay_prob=1.0).transition_matrix())
    assert np.allclose(stationary_distribution(frozen), [1 / 3, 1 / 3, 1 / 3], atol=1e-12)
    channel = MarkovChannel(ChannelConfig(stay_prob=1.0), tti_ms=0.5)
    channel.reset(np.random.default_rng(0), (3000, 1))
    counts = np.bincount(channel.state.ravel(), minlength=3) / 3000
    assert np.all(np.abs(counts - 1 / 3) < 5 * math.sqrt(2 / 9 / 3000))


def test_fixed_channels_and_initial_buffers_make_the_static_stress_test():
    """Paper Table VIII: full buffers and fixed heterogeneous SE that never change."""
    scenario = ScenarioConfig.from_dict({
        "cell": {"ue_counts": [5]},
        "traffic": {"bernoulli_rates": [0.0], "initial_dpdus": 30},
        "channel": {"initial": "fixed", "fixed_states": [2, 1, 0], "stay_prob": 1.0}})
    sim = UplinkSimulator(scenario, n_envs=2)
    sim.reset(seed=3)
    assert sim.buffers.count[:, :5].tolist() == [[30] * 5] * 2
    assert sim.channel.state[:, :5].tolist() == [[2, 1, 0, 2, 1]] * 2
    for _ in range(20):
        sim.step(np.zeros((2, sim.max_ues, sim.n_rbgs), dtype=bool))
    assert sim.channel.state[:, :5].tolist() == [[2, 1, 0, 2, 1]] * 2
    assert sim.buffers.count[:, :5].tolist() == [[30] * 5] * 2  # no arrivals, nothing sent


def test_fixed_states_are_validated():
    with pytest.raises(ConfigError, match=r"ChannelConfig.fixed_states = \(3,\) is invalid"):
        ScenarioConfig.from_dict({"channel": {"fixed_states": [3]}})
    with pytest.raises(ConfigError, match="TrafficConfig.initial_dpdus = -1 is invalid"):
        ScenarioConfig.from_dict({"traffic": {"initial_dpdus": -1}})
