"""``agentic-mac simulate``, end to end: the KPI table of policy pairs on scenarios."""

import csv
import io
import subprocess
import sys

import pytest

from textgame.metrics import KPIS
from trainers.cli.simulate import main

QUIET = ["--disable_tqdm"]


def test_csv_has_a_row_per_pair_and_ue_count(tmp_path, capsys):
    code = main(["--leader", "max_weight", "idle", "--followers", "dictator", "s_aloha",
                 "--ues", "2", "3", "--episodes", "6", "--n_envs", "4", "--seeds", "2",
                 "--format", "csv", "--output_dir", str(tmp_path), *QUIET])
    assert code == 0
    written = (tmp_path / "results.csv").read_text()
    rows = list(csv.DictReader(io.StringIO(written)))
    assert [(r["leader"], r["followers"], r["ues"]) for r in rows] == [
        ("max_weight", "dictator", "2"), ("idle", "s_aloha", "2"),
        ("max_weight", "dictator", "3"), ("idle", "s_aloha", "3")]
    for row in rows:
        assert int(row["throughput_mbps_n"]) == 12  # 6 episodes x 2 seeds
        assert 0.0 <= float(row["fairness_mean"]) <= 1.0
        assert {f"{k}_mean" for k in KPIS} <= set(row)
    assert capsys.readouterr().out == written
    assert (tmp_path / "results.md").read_text().startswith("| leader | followers | ues |")


def test_every_episode_is_written_and_gives_the_tables_means(tmp_path):
    """episodes.csv holds one line per (pair, I, N, seed, episode) with every KPI, and the
    table's means are the means of those lines (any later statistic can start from disk)."""
    assert main(["--leader", "max_weight", "--followers", "dictator", "s_aloha", "--ues", "2",
                 "3", "--episodes", "5", "--n_envs", "4", "--seeds", "2", "--seed", "7",
                 "--format", "csv", "--output_dir", str(tmp_path), *QUIET]) == 0
    table = list(csv.DictReader(io.StringIO((tmp_path / "results.csv").read_text())))
    lines = list(csv.DictReader(io.StringIO((tmp_path / "episodes.csv").read_text())))
    assert len(lines) == 2 * 2 * 2 * 5  # pairs x I x seeds x episodes
    assert {(r["seed"], r["episode"]) for r in lines} == {
        (str(s), str(e)) for s in (7, 8) for e in range(5)}
    for row in table:
        mine = [r for r in lines if (r["leader"], r["followers"], r["ues"]) == (
            row["leader"], row["followers"], row["ues"])]
        assert len(mine) == 10
        for kpi in KPIS:
            values = [float(r[kpi]) for r in mine if r[kpi] != "nan"]
            if values:
                assert float(row[f"{kpi}_mean"]) == pytest.approx(sum(values) / len(values))


def test_markdown_table_lists_the_requested_kpis(capsys):
    main(["--ues", "4", "--rbgs", "3", "8", "--episodes", "4", "--n_envs", "4",
          "--kpis", "fairness", "latency_p95", *QUIET])
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0] == "| leader | followers | ues | rbgs | fairness | latency_p95 |"
    assert [line.split(" | ")[3] for line in lines[2:]] == ["3", "8"]
    assert all("±" in line for line in lines[2:])


def test_same_seed_gives_the_same_table(capsys):
    args = ["--episodes", "5", "--n_envs", "3", "--seed", "7", "--format", "csv", *QUIET]
    main(args)
    first = capsys.readouterr().out
    main(args)
    assert capsys.readouterr().out == first


def test_dash_aliases_are_accepted(capsys):
    assert main(["--n-envs", "2", "--episodes", "2", "--disable-tqdm", "--ues", "2"]) == 0
    assert "| max_weight | dictator | 2 |" in capsys.readouterr().out


@pytest.mark.parametrize("args, message", [
    (["--tbler", "1.0"], "CellConfig.tbler = 1.0 is invalid; allowed: a number in [0.0, 1.0)"),
    (["--ues", "0"], "CellConfig.ue_counts = (0,) is invalid"),
    (["--episodes", "0"], "SimulateConfig.episodes = 0 is invalid; allowed: an integer >= 1"),
    (["--kpis", "speed"], "SimulateConfig.kpis = 'speed' is invalid; allowed: 'all' or any of"),
    (["--leader", "a", "b"], "SimulateConfig.leader = 'a' is invalid; allowed: one of"),
    (["--format", "xml"], "argument --format: invalid choice: 'xml'"),
    (["--totl", "3"], "unknown option --totl"),
    (["--leader", "idle", "random", "--followers", "dictator", "random", "s_aloha"],
     "--leader has 2 values and --followers 3"),
    (["--leader", "llm:/nonexistent"], "SimulateConfig.leader = 'llm:/nonexistent' is invalid"),
])
def test_bad_arguments_exit_2_with_one_named_error(args, message, capsys):
    assert main(args + QUIET) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


def test_scenario_file_sets_the_scenario(tmp_path, capsys):
    scenario = tmp_path / "scenario.yaml"
    scenario.write_text("scenario:\n  cell:\n    n_rbgs: 6\n    ue_counts: [2]\n")
    main(["--scenario", str(scenario), "--episodes", "2", "--n_envs", "2", *QUIET])
    row = capsys.readouterr().out.strip().splitlines()[2]
    assert row.startswith("| max_weight | dictator | 2 | 6 |")
    scenario.write_text("scenario:\n  cell:\n    n_rbg: 6\n")
    assert main(["--scenario", str(scenario), *QUIET]) == 2
    assert "CellConfig.n_rbg = 6" in capsys.readouterr().err


def test_config_file_sets_options(tmp_path, capsys):
    config = tmp_path / "simulate.yaml"
    config.write_text("episodes: 2\nn_envs: 2\nues: [3]\nscenario: '{\"cell\": {\"n_rbgs\": 5}}'\n")
    assert main(["--config", str(config), *QUIET]) == 0
    assert capsys.readouterr().out.strip().splitlines()[2].startswith(
        "| max_weight | dictator | 3 | 5 |")


def test_agentic_mac_runs_simulate_as_a_subcommand():
    result = subprocess.run(
        [sys.executable, "-m", "trainers.cli.main", "simulate", "--episodes", "3", "--n_envs",
         "3", "--ues", "3"], capture_output=True, text=True, timeout=120, check=True)
    assert result.stdout.startswith("| leader | followers | ues | rbgs |")
    assert "ep" in result.stderr  # the progress bar
