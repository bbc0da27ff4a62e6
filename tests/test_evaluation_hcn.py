"""The hcn suite (trainers.evaluation.network): rows, LLM adapters per DBS, the scaling check."""

from __future__ import annotations

import pytest

from textgame.metrics import Summary
from trainers.evaluation.network import evaluate_hcn, scaling_check
from trainers.specs import parse_spec

TINY = {"scenario": {"cell": {"episode_ttis": 4}}}


def test_evaluate_hcn_gives_one_row_per_policy_partition_and_cell_count():
    rows = evaluate_hcn([parse_spec("MW=max_weight/dictator")], TINY, cells=(1, 2),
                        partitions=("equal", "random"), episodes=3)
    assert [(r["partition"], r["x"]) for r in rows] == [
        ("equal", 1), ("equal", 2), ("random", 1), ("random", 2)]
    assert all(r["kpis"]["network_throughput_mbps"].n == 3 for r in rows)
    assert rows[1]["cells"]["throughput_mbps"].shape == (3, 2)


def test_llm_adapters_play_every_dbs_with_valid_actions(tiny_path, tmp_path, one_thread):
    from trl import ModelConfig

    from trainers.policy.models import StackelbergPolicy
    from trainers.runs.hub import write_trainer_config
    from trainers.stackelberg.config import StackelbergPPOConfig

    config = StackelbergPPOConfig(value_head_hidden=16)
    StackelbergPolicy.from_model_config(
        ModelConfig(model_name_or_path=tiny_path, lora_r=4, lora_alpha=8), config,
    ).save_adapters(tmp_path)
    write_trainer_config(tmp_path, config)
    small = {"scenario": {"cell": {"episode_ttis": 2, "n_rbgs": 2}}, "local_ues": 2}
    rows = evaluate_hcn([parse_spec(f"LLM=llm:{tmp_path}")], small, cells=(1, 2),
                        partitions=("equal",), episodes=2)
    assert [r["x"] for r in rows] == [1, 2]
    assert all(r["kpis"]["network_throughput_mbps"].n == 2 for r in rows)


def test_unknown_partitions_are_refused():
    with pytest.raises(ValueError, match="partition 'greedy' is unknown"):
        evaluate_hcn([parse_spec("max_weight/dictator")], TINY, partitions=("greedy",))


def test_scaling_check_compares_throughput_per_cell_at_16_cells_with_one():
    def row(c, mean):
        return {"policy": "P", "partition": "equal", "x": c,
                "kpis": {"throughput_per_cell_mbps": Summary(mean, 0.0, 8, 0.01)}}

    lines = scaling_check([row(1, 2.0), row(16, 1.85)]).splitlines()
    assert lines[2].endswith("| 0.925 | yes |")
    assert scaling_check([row(1, 2.0), row(16, 1.7)]).splitlines()[2].endswith("| 0.850 | no |")


def test_agentic_mac_evaluate_runs_the_hcn_suite(tmp_path, capsys):
    from trainers.cli.evaluate import main

    code = main(["--suites", "hcn", "--policies", "MW=max_weight/dictator", "--episodes", "2",
                 "--hcn_cells", "1", "2", "--hcn_partitions", "equal", "proportional",
                 "--scenario", '{"cell": {"episode_ttis": 3}}', "--output_dir", str(tmp_path),
                 "--disable_tqdm"])
    assert code == 0
    table = (tmp_path / "hcn.md").read_text()
    assert table.count("| MW |") == 4  # C = 1, 2 x two partitions
    assert (tmp_path / "hcn.png").read_bytes()[:4] == b"\x89PNG"
    assert "| C=2, proportional | MW |" in capsys.readouterr().out
