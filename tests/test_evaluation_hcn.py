"""The hcn suite (trainers.evaluation.network): rows, the scaling check, refused LLM specs."""

from __future__ import annotations

import pytest

from textgame.metrics import Summary
from trainers.evaluation.network import evaluate_hcn, scaling_check
from trainers.evaluation.suites import parse_policy

TINY = {"scenario": {"cell": {"episode_ttis": 4}}}


def test_evaluate_hcn_gives_one_row_per_policy_partition_and_cell_count():
    rows = evaluate_hcn([parse_policy("MW=max_weight/dictator")], TINY, cells=(1, 2),
                        partitions=("equal", "random"), episodes=3)
    assert [(r["partition"], r["x"]) for r in rows] == [
        ("equal", 1), ("equal", 2), ("random", 1), ("random", 2)]
    assert all(r["kpis"]["network_throughput_mbps"].n == 3 for r in rows)
    assert rows[1]["cells"]["throughput_mbps"].shape == (3, 2)


def test_llm_specs_and_unknown_partitions_are_refused():
    with pytest.raises(ValueError, match="LLM policies cannot play the hcn suite yet"):
        evaluate_hcn([parse_policy("llm:runs/x/final")], TINY, cells=(1,), episodes=1)
    with pytest.raises(ValueError, match="partition 'greedy' is unknown"):
        evaluate_hcn([parse_policy("max_weight/dictator")], TINY, partitions=("greedy",))


def test_scaling_check_compares_throughput_per_cell_at_16_cells_with_one():
    def row(c, mean):
        return {"policy": "P", "partition": "equal", "x": c,
                "kpis": {"throughput_per_cell_mbps": Summary(mean, 0.0, 8, 0.01)}}

    lines = scaling_check([row(1, 2.0), row(16, 1.85)]).splitlines()
    assert lines[2].endswith("| 0.925 | yes |")
    assert scaling_check([row(1, 2.0), row(16, 1.7)]).splitlines()[2].endswith("| 0.850 | no |")
