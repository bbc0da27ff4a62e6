"""KPIs on a scripted episode whose every value is worked out by hand below."""

import math

import numpy as np
import pytest

from textgame.config import CellConfig, ChannelConfig, ScenarioConfig, TrafficConfig
from textgame.game import StackelbergGame
from textgame.metrics import (
    KPIS,
    EpisodeKPIs,
    paired_difference,
    summarize,
    summarize_values,
    t_quantile_975,
)

# Two UEs, N = 2, T = 4; each UE gets one dPDU (256 bits) every TTI; every RBG carries 128 bits
# (floor(672 * 0.1906) = 128) in every channel state; no erasures; the leader schedules nobody.
SCENARIO = ScenarioConfig(
    cell=CellConfig(n_rbgs=2, ue_counts=(2,), episode_ttis=4, tbler=0.0),
    traffic=TrafficConfig(models=("periodic",), period_ttis=1),
    channel=ChannelConfig(spectral_efficiency=(0.1906, 0.1906, 0.1906)),
)
# bitmaps per TTI, rows = UEs, columns = RBGs
SCRIPT = [
    [[1, 1], [0, 0]],  # t0: UE1 alone on both RBGs: its t0 dPDU is received, latency 0
    [[1, 0], [1, 1]],  # t1: RBG1 collides; UE2 sends half of its t0 dPDU on RBG2
    [[0, 0], [1, 1]],  # t2: UE2 finishes its t0 dPDU (latency 2) and half of its t1 dPDU
    [[0, 0], [0, 0]],  # t3: nobody transmits; UE2's action was replaced (invalid)
]


def scripted_kpis() -> dict[str, float]:
    game = StackelbergGame(SCENARIO, n_envs=1)
    kpis = EpisodeKPIs(SCENARIO.cell, 1)
    game.reset(seed=0)
    for t, bitmap in enumerate(SCRIPT):
        game.step_leader(np.zeros((1, 2), dtype=np.int64))
        invalid = np.array([[False, t == 3]])
        step = game.step_followers(np.array([bitmap]), np.zeros((1, 2), dtype=np.int64),
                                   invalid_followers=invalid)
        kpis.update(step)
    assert step.done
    return {k: float(v[0]) for k, v in kpis.result().items()}


# Delivered bits: UE1 256, UE2 128 + 256 = 384. Attempts 7, successes 5, received dPDUs 2.
# Buffers after delivery (dPDUs): t0 (0, 1), t1 (1, 2), t2 (2, 2), t3 (3, 3) -> sum 14 over 8.
# Served RBGs U_t: (2, 0), (2, 1), (2, 3), (2, 3); N * c_max = 256 bits.
EXPECTED = {
    "throughput_mbps": 640 / 2 / (4 * 0.5e-3) / 1e6,
    "fairness": 640**2 / (2 * (256**2 + 384**2)),
    "resource_efficiency": 2 / 7,
    "packet_success_rate": 5 / 7,
    "latency_mean": 1.0,
    "latency_p95": 2.0,
    "buffer_mean": 14 / 8,
    "buffer_max": 3.0,
    "collision_rate": 1 / 8,
    "idle_rbg_rate": 2 / 8,
    "erasure_rate": 0.0,
    "drop_rate": 0.0,
    "invalid_action_rate": 1 / 12,  # 4 leader + 8 follower actions
    "leader_utility": (
        (0.5 * 256 / 256 + 0.5 * 4 / 8)
        + (0.5 * 128 / 256 + 0.5 * 9 / 10)
        + (0.5 * 256 / 256 + 0.5 * 25 / 26)
        + (0.5 * 0 + 0.5 * 25 / 26)
    ) / 4,
    # F = 0.5 * min(1, rx / max(tx, 1)) + 0.5 * (1 - |b| / 2) with an all-zero DCM
    "follower_utility": (0.25 + 0.5 + 0.25 + 0.125 + 0.5 + 0.25 + 0.5 + 0.5) / 8,
}


@pytest.fixture(scope="module")
def kpis():
    return scripted_kpis()


def test_every_kpi_has_an_expected_value():
    assert set(EXPECTED) == set(KPIS)


@pytest.mark.parametrize("kpi", KPIS)
def test_kpi_on_scripted_episode(kpis, kpi):
    assert kpis[kpi] == pytest.approx(EXPECTED[kpi], rel=1e-12)


def test_drop_rate_counts_arrivals_refused_by_a_full_buffer():
    scenario = ScenarioConfig(
        cell=CellConfig(n_rbgs=1, ue_counts=(1,), episode_ttis=5, buffer_dpdus=2, tbler=0.0),
        traffic=TrafficConfig(models=("periodic",), period_ttis=1))
    game, kpis = StackelbergGame(scenario, 1), EpisodeKPIs(scenario.cell, 1)
    game.reset(seed=3)
    for _ in range(5):
        game.step_leader(np.zeros((1, 1), dtype=np.int64))
        kpis.update(game.step_followers(np.zeros((1, 1, 1)), np.zeros((1, 1), dtype=np.int64)))
    result = kpis.result()
    assert result["drop_rate"][0] == pytest.approx(3 / 5)
    assert result["buffer_max"][0] == 2
    assert math.isnan(result["latency_mean"][0])  # nothing received: undefined, not 0
    assert math.isnan(result["resource_efficiency"][0])  # no attempts
    assert result["fairness"][0] == 0.0  # nothing served


def test_t_quantile_matches_student_t_table():
    for df, value in {1: 12.706, 3: 3.182, 5: 2.571, 10: 2.228, 30: 2.042, 120: 1.980}.items():
        assert t_quantile_975(df) == pytest.approx(value, abs=1.5e-3)


def test_summary_mean_and_confidence_interval():
    s = summarize_values([1.0, 2.0, 3.0, 4.0, 5.0, math.nan])
    assert s.n == 5 and s.mean == 3.0
    assert s.std == pytest.approx(math.sqrt(2.5))
    assert s.ci95 == pytest.approx(2.7764 * math.sqrt(2.5) / math.sqrt(5), rel=1e-4)


def test_summarize_pools_batches_and_seeds():
    pooled = summarize([{"fairness": np.array([0.5, 1.0])}, {"fairness": np.array([0.75])}])
    assert pooled["fairness"].n == 3 and pooled["fairness"].mean == pytest.approx(0.75)
    assert summarize_values([]).n == 0


def test_paired_difference_is_the_t_interval_of_the_differences():
    ppo = [0.30, 0.25, 0.41, 0.36, 0.28]
    seeded = [0.27, 0.24, 0.37, 0.33, 0.27]  # differences 0.03, 0.01, 0.04, 0.03, 0.01
    d = paired_difference(ppo, seeded)
    assert d.n == 5 and d.mean == pytest.approx(0.024)
    std = math.sqrt(((0.006**2) * 2 + 0.014**2 + 0.016**2 + 0.014**2) / 4)
    assert d.std == pytest.approx(std)
    assert d.ci95 == pytest.approx(2.7764 * std / math.sqrt(5))
    assert t_quantile_975(4) == 2.7764
    # the pairs' shared noise cancels: far narrower than either policy's own interval
    assert d.ci95 < summarize_values(ppo).ci95 / 4
    assert paired_difference([1.0, math.nan, 3.0], [0.5, 2.0, 2.0]).n == 2
    with pytest.raises(ValueError, match="paired samples of 2 and 3 episodes"):
        paired_difference([1.0, 2.0], [1.0, 2.0, 3.0])


def test_episodes_csv_writes_every_episode_exactly_under_its_labels():
    from textgame.metrics import episodes_csv

    groups = [({"policy": "a", "seed": 3}, {"x": np.array([0.1, 1 / 3]), "y": np.array([1, 2])}),
              ({"policy": "b", "seed": 4}, {"x": np.array([np.nan])})]
    lines = episodes_csv(groups).splitlines()
    assert lines == ["policy,seed,episode,x,y", "a,3,0,0.1,1.0", f"a,3,1,{1 / 3!r},2.0",
                     "b,4,0,nan,"]
    assert float(lines[2].split(",")[3]) == 1 / 3  # repr: the exact double comes back
    assert episodes_csv([]) == ""
    with pytest.raises(ValueError, match=r"different labels; allowed: \['policy', 'seed'\]"):
        episodes_csv([*groups, ({"policy": "c"}, {"x": np.zeros(1)})])
