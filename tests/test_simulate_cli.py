"""The KPI-table command, end to end."""

import csv
import io
import subprocess
import sys

import pytest

from textgame.metrics import KPIS
from textgame.simulate import main


def test_csv_has_a_row_per_pair_and_ue_count(tmp_path, capsys):
    out = tmp_path / "kpis.csv"
    code = main(["--leader", "max_weight", "idle", "--followers", "dictator", "s_aloha",
                 "--ues", "2", "3", "--episodes", "6", "--envs", "4", "--seeds", "2",
                 "--format", "csv", "--output", str(out), "--no-progress"])
    assert code == 0
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert [(r["leader"], r["followers"], r["ues"]) for r in rows] == [
        ("max_weight", "dictator", "2"), ("idle", "s_aloha", "2"),
        ("max_weight", "dictator", "3"), ("idle", "s_aloha", "3")]
    for row in rows:
        assert int(row["throughput_mbps_n"]) == 12  # 6 episodes x 2 seeds
        assert 0.0 <= float(row["fairness_mean"]) <= 1.0
        assert {f"{k}_mean" for k in KPIS} <= set(row)
    assert capsys.readouterr().out == out.read_text()


def test_markdown_table_lists_the_requested_kpis(capsys):
    main(["--ues", "4", "--rbgs", "3", "8", "--episodes", "4", "--envs", "4",
          "--kpis", "fairness", "latency_p95", "--no-progress"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0] == "| leader | followers | ues | rbgs | fairness | latency_p95 |"
    assert [line.split(" | ")[3] for line in lines[2:]] == ["3", "8"]
    assert all("±" in line for line in lines[2:])


def test_same_seed_gives_the_same_table(capsys):
    args = ["--episodes", "5", "--envs", "3", "--seed", "7", "--format", "csv", "--no-progress"]
    main(args)
    first = capsys.readouterr().out
    main(args)
    assert capsys.readouterr().out == first


@pytest.mark.parametrize("args, message", [
    (["--tbler", "1.0"], "CellConfig.tbler = 1.0"),
    (["--ues", "0"], "CellConfig.ue_counts"),
    (["--episodes", "0"], "--episodes = 0"),
    (["--kpis", "speed"], "--kpis 'speed'"),
    (["--leader", "a", "b"], "invalid choice"),
    (["--leader", "idle", "random", "--followers", "dictator", "random", "s_aloha"],
     "--leader has 2 values"),
])
def test_bad_arguments_exit_with_a_named_error(args, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(args + ["--no-progress"])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_config_file_sets_the_scenario(tmp_path, capsys):
    config = tmp_path / "scenario.yaml"
    config.write_text("scenario:\n  cell:\n    n_rbgs: 6\n    ue_counts: [2]\n")
    main(["--config", str(config), "--episodes", "2", "--envs", "2", "--no-progress"])
    row = capsys.readouterr().out.strip().splitlines()[2]
    assert row.startswith("| max_weight | dictator | 2 | 6 |")
    config.write_text("scenario:\n  cell:\n    n_rbg: 6\n")
    with pytest.raises(SystemExit):
        main(["--config", str(config), "--no-progress"])
    assert "CellConfig.n_rbg = 6" in capsys.readouterr().err


def test_module_runs_as_a_command():
    result = subprocess.run(
        [sys.executable, "-m", "textgame.simulate", "--episodes", "3", "--envs", "3",
         "--ues", "3"], capture_output=True, text=True, timeout=120, check=True)
    assert result.stdout.startswith("| leader | followers | ues | rbgs |")
    assert "ep" in result.stderr  # the progress bar
