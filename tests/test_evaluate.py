"""The evaluation suite (trainers/evaluation/, recipes/evaluate.py): the
paper's scenarios, policy specs, common random numbers, LLM policies end to end, tables, figures."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from trl import ModelConfig

from textgame.policies import make_follower, make_leader
from textgame.runner import run_episodes
from trainers.evaluation.report import line_style, markdown, plot_sweep, plot_training, to_csv
from trainers.evaluation.suites import (
    LEGACY_LOADS,
    LEGACY_MIXES,
    TBLERS,
    TRAFFIC_CASES,
    Evaluator,
    suite_cases,
)
from trainers.policy.models import StackelbergPolicy
from trainers.runs.hub import write_trainer_config
from trainers.specs import parse_spec
from trainers.stackelberg.config import StackelbergPPOConfig

ROOT = Path(__file__).resolve().parents[1]
SHORT = {"cell": {"episode_ttis": 4}}  # a short base scenario: every suite keeps T = 4

pytestmark = pytest.mark.usefixtures("one_thread")


# ----------------------------------------------------------------------------------- suites
def test_ue_suite_is_i_2_to_10_at_n_4():
    cases = suite_cases("ues")
    assert [c.x for c in cases] == list(range(2, 11))
    assert [c.scenario.cell.ue_counts for c in cases] == [(i,) for i in range(2, 11)]
    assert {c.scenario.cell.n_rbgs for c in cases} == {4}
    assert [c.scenario.cell.max_ues for c in cases] == list(range(2, 11))


def test_the_wide_ue_suite_runs_to_i_14_and_splits_training_from_held_out_sizes():
    cases = suite_cases("ues14", SHORT)
    assert [c.x for c in cases] == list(range(2, 15))
    assert [c.scenario.cell.max_ues for c in cases] == list(range(2, 15))
    evaluator = Evaluator(episodes=2, n_envs=2)
    from textgame.metrics import summarize

    rows = [{"policy": "RR", "suite": "ues14", "case": c.label, "x": c.x,
             "kpis": summarize([evaluator.run(parse_spec("round_robin/dictator"), c)])}
            for c in cases]
    table = markdown(rows, training_sizes=[2, 4, 6, 8])
    trained, held = table.split("### ues14: held-out sizes")
    assert "### ues14: training sizes I in [2, 4, 6, 8]" in trained
    assert [f"| I={i} |" in trained for i in range(2, 15)] == [
        i in (2, 4, 6, 8) for i in range(2, 15)]
    assert all(f"| I={i} |" in held for i in (3, 5, 7, 9, 10, 11, 12, 13, 14))


def test_an_llm_plays_fourteen_ues_under_the_pag(llm_dir):
    """The text layer and the grammars scale with I: UE numbers up to 14 in the DCM."""
    case = suite_cases("ues14", SHORT)[-1]
    assert case.scenario.cell.ue_counts == (14,)
    result = Evaluator(episodes=2, n_envs=2).run(parse_spec(f"llm:{llm_dir}"), case)
    assert {len(v) for v in result.values()} == {2}
    assert (result["invalid_action_rate"] == 0).all()


def test_rbg_and_tbler_suites_hold_five_ues():
    rbgs = suite_cases("rbgs")
    assert [c.scenario.cell.n_rbgs for c in rbgs] == [3, 4, 5, 6, 7, 8]
    tbler = suite_cases("tbler")
    assert [c.scenario.cell.tbler for c in tbler] == list(TBLERS)
    assert {c.scenario.cell.ue_counts for c in rbgs + tbler} == {(5,)}


def test_traffic_suite_is_table_iii():
    cases = suite_cases("traffic")
    assert [c.label for c in cases] == list(TRAFFIC_CASES)
    assert cases[0].scenario.traffic.models == ("bernoulli",) * 5
    assert cases[5].scenario.traffic.models == ("bernoulli",) * 3 + ("periodic", "bursty")
    assert cases[6].scenario.traffic.models == ("bernoulli", "periodic", "periodic", "bursty",
                                                "bursty")


def test_legacy_suite_is_table_vii():
    cases = suite_cases("legacy")
    assert len(cases) == len(LEGACY_LOADS) * len(LEGACY_MIXES) == 15
    assert [c.legacy_ues for c in cases[:5]] == [0, 1, 2, 4, 5]
    assert [c.scenario.traffic.bernoulli_rates for c in cases[::5]] == [(x,) for x in
                                                                       LEGACY_LOADS]


def test_stress_suite_has_full_buffers_and_fixed_channels():
    (case,) = suite_cases("stress")
    s = case.scenario
    assert s.traffic.initial_dpdus == 100 and s.traffic.bernoulli_rates == (1.0,)
    assert s.channel.initial == "fixed" and s.channel.stay_prob == 1.0


def test_suites_keep_the_base_scenario_and_reject_unknown_names():
    assert {c.scenario.cell.episode_ttis for c in suite_cases("ues", SHORT)} == {4}
    with pytest.raises(ValueError, match="suite 'nope' is unknown"):
        suite_cases("nope")


# --------------------------------------------------------------------------------- evaluator
def test_heuristics_meet_the_same_environments_as_run_episodes():
    case = suite_cases("ues", SHORT)[3]
    result = Evaluator(episodes=10, n_envs=4, seed=7).run(parse_spec("max_weight/dictator"),
                                                           case)
    direct = run_episodes(case.scenario, make_leader("max_weight", case.scenario.cell),
                          make_follower("dictator"), 10, 4, seed=7)
    for kpi, values in direct.items():
        np.testing.assert_array_equal(result[kpi], values)


def test_legacy_ues_raise_collisions_for_obedient_schedules():
    """Max-Weight + Dictator never collides; S-ALOHA legacy UEs among them do."""
    cases = {c.legacy_ues: c for c in suite_cases("legacy", SHORT)[:5]}
    evaluator = Evaluator(episodes=16, n_envs=8)
    spec = parse_spec("max_weight/dictator")
    assert (evaluator.run(spec, cases[0])["collision_rate"] == 0).all()
    assert evaluator.run(spec, cases[2])["collision_rate"].mean() > 0


def test_marl_specs_fill_the_case_into_the_path_mappo_s_style(tmp_path):
    """MAPPO-S: one model per I, found through '{ues}' in the path; each plays its own cell."""
    from trainers.marl import MARLConfig, MARLTrainer

    small = {"ue_hidden": [8], "ue_latent": 8, "bs_hidden": [8], "bs_latent": 8,
             "critic_hidden": [8], "n_envs": 4, "minibatch_size": 32, "ppo_epochs": 1,
             "total_updates": 1, "save_every": 0}
    for i in (2, 3):
        scenario = {"cell": {"ue_counts": [i], "n_rbgs": 4, "episode_ttis": 4}}
        trainer = MARLTrainer(MARLConfig(scenario=scenario, output_dir=str(tmp_path / f"I{i}"),
                                         **small))
        trainer.train()
        trainer.save_model()
    spec = parse_spec(f"MAPPO-S=marl:{tmp_path}/I{{ues}}/final")
    evaluator = Evaluator(episodes=4, n_envs=4)
    for case in suite_cases("ues", SHORT)[:2]:
        result = evaluator.run(spec, case)
        assert len(result["throughput_mbps"]) == 4
        assert (result["invalid_action_rate"] == 0).all()
    with pytest.raises(ValueError, match="no MARL model directory .*I4/final .for I=4"):
        evaluator.run(spec, suite_cases("ues", SHORT)[2])  # no model trained for I = 4


@pytest.fixture(scope="module")
def llm_dir(tiny_path, tmp_path_factory) -> Path:
    """An untrained policy saved like trainer.save_model does (adapters, heads, config)."""
    folder = tmp_path_factory.mktemp("llm-policy")
    config = StackelbergPPOConfig(value_head_hidden=16)
    policy = StackelbergPolicy.from_model_config(
        ModelConfig(model_name_or_path=tiny_path, lora_r=4, lora_alpha=8), config)
    policy.save_adapters(folder)
    write_trainer_config(folder, config)
    return folder


def test_llm_policies_play_every_episode_with_valid_actions(llm_dir):
    evaluator = Evaluator(episodes=5, n_envs=2)
    case = suite_cases("ues", SHORT)[1]  # I = 3
    result = evaluator.run(parse_spec(f"llm:{llm_dir}"), case)
    assert {len(v) for v in result.values()} == {5}  # batches 2 + 2 + 1
    assert (result["invalid_action_rate"] == 0).all()  # PAG: every action parses
    again = Evaluator(episodes=5, n_envs=2).run(parse_spec(f"llm:{llm_dir}"), case)
    for kpi in result:
        np.testing.assert_array_equal(result[kpi], again[kpi])  # seeded sampling


def test_llm_evaluation_plays_the_ues_as_trained(llm_dir, tmp_path):
    """A Dictator-ablation policy is evaluated with obedient UEs: no collisions, ever."""
    folder = tmp_path / "dictator"
    folder.mkdir()
    for item in llm_dir.iterdir():
        (folder / item.name).symlink_to(item)
    for name in ("trainer_config.json", "play_config.json"):  # links into llm_dir: replaced
        (folder / name).unlink()
    write_trainer_config(folder, StackelbergPPOConfig(follower_policy="dictator",
                                                      value_head_hidden=16))
    result = Evaluator(episodes=4, n_envs=4).run(parse_spec(f"llm:{folder}"),
                                                 suite_cases("ues", SHORT)[3])
    assert (result["collision_rate"] == 0).all()


# ------------------------------------------------------------------------- tables, figures
def rows_of(evaluator, specs, suite):
    from textgame.metrics import summarize

    return [{"policy": s.label, "suite": c.suite, "case": c.label, "x": c.x,
             "kpis": summarize([evaluator.run(s, c)])}
            for c in suite_cases(suite, SHORT) for s in specs]


def test_tables_have_a_line_per_policy_and_case():
    specs = [parse_spec("MW=max_weight/dictator"), parse_spec("idle/s_aloha")]
    rows = rows_of(Evaluator(episodes=4, n_envs=4), specs, "rbgs")
    table = markdown(rows)
    assert table.count("| N=") == 12 and "| MW |" in table
    records = list(csv.DictReader(io.StringIO(to_csv(rows))))
    assert len(records) == 12
    assert float(records[0]["throughput_mbps_n"]) == 4.0


def test_merged_evaluations_give_the_joint_table(tmp_path, capsys):
    """Policies evaluated in separate jobs and merged = one joint evaluation, byte for byte."""
    from trainers.cli.evaluate import main

    common = ["--suites", "ues", "--episodes", "3", "--n_envs", "2", "--disable_tqdm", "true",
              "--scenario", '{"cell": {"episode_ttis": 4}}', "--num_threads", "1"]
    mw, aloha = "MW=max_weight/dictator", "S-ALOHA=idle/s_aloha"
    assert main([*common, "--policies", mw, aloha, "--output_dir", str(tmp_path / "joint")]) == 0
    assert main([*common, "--policies", aloha, "--output_dir", str(tmp_path / "b")]) == 0
    assert main([*common, "--policies", mw, "--merge", str(tmp_path / "b"),
                 "--output_dir", str(tmp_path / "merged")]) == 0
    joint, merged = ((tmp_path / d / "results.csv").read_text() for d in ("joint", "merged"))
    assert merged == joint and joint.count("S-ALOHA") == 9
    assert (tmp_path / "merged" / "results.md").read_text() == (
        tmp_path / "joint" / "results.md").read_text()
    capsys.readouterr()
    more_episodes = [*common[:3], "4", *common[4:]]
    for args, message in ((more_episodes + ["--policies", mw],
                           "(3 episodes) is not a case of this evaluation"),
                          (common + ["--policies", aloha], "'S-ALOHA' is already in the table")):
        merge = ["--merge", str(tmp_path / "b"), "--output_dir", str(tmp_path / "x")]
        assert main(args + merge) == 2
        assert message in capsys.readouterr().err


def test_paired_differences_are_those_of_the_saved_episodes(tmp_path, capsys):
    """--paired_against: each policy minus the reference on the same episodes, recomputed
    here from episodes.csv (every episode's KPIs, saved with the evaluation)."""
    import csv

    from textgame.metrics import summarize_values
    from trainers.cli.evaluate import main

    common = ["--suites", "ues", "--episodes", "3", "--n_envs", "2", "--disable_tqdm", "true",
              "--scenario", '{"cell": {"episode_ttis": 4}}', "--num_threads", "1", "--seeds", "2"]
    policies = ["--policies", "MW=max_weight/dictator", "RR=round_robin/dictator"]
    out = tmp_path / "paired"
    assert main([*common, *policies, "--paired_against", "RR", "--output_dir", str(out)]) == 0
    text = capsys.readouterr().out
    assert "Paired differences to RR" in text and "MW - RR" in text
    with open(out / "episodes.csv", newline="") as handle:
        records = list(csv.DictReader(handle))
    assert len(records) == 9 * 2 * 2 * 3  # cases x policies x seeds x episodes
    table = (out / "paired.md").read_text()
    assert table.count("| MW - RR |") == 9
    for case in ("I=2", "I=7"):
        mine = {(r["seed"], r["episode"]): float(r["throughput_mbps"]) for r in records
                if r["case"] == case and r["policy"] == "MW"}
        base = {(r["seed"], r["episode"]): float(r["throughput_mbps"]) for r in records
                if r["case"] == case and r["policy"] == "RR"}
        d = summarize_values([mine[k] - base[k] for k in sorted(mine)])
        assert d.n == 6 and d.ci95 > 0
        line = next(line for line in table.splitlines() if f"| {case} | MW - RR |" in line)
        assert line.split("|")[3].strip() == str(d)  # throughput_mbps: mean ± CI
    assert main([*common, *policies, "--paired_against", "S-ALOHA",
                 "--output_dir", str(tmp_path / "x")]) == 2
    assert ("EvaluateConfig.paired_against = 'S-ALOHA' is invalid; allowed: the label of one of "
            "--policies ['MW', 'RR']") in capsys.readouterr().err


def test_ue_counts_play_those_sizes_of_the_sweep_only(tmp_path, capsys):
    """--ue_counts: the listed sizes of the UE sweep, each exactly as in the whole sweep (same
    episodes: common random numbers); a size outside the sweep, or sizes without a UE sweep,
    is one line naming the field."""
    import csv

    from trainers.cli.evaluate import main

    common = ["--suites", "ues14", "--episodes", "2", "--n_envs", "2", "--disable_tqdm", "true",
              "--scenario", '{"cell": {"episode_ttis": 3}}', "--num_threads", "1",
              "--policies", "RR=round_robin/dictator"]
    assert main([*common, "--output_dir", str(tmp_path / "all")]) == 0
    assert main([*common, "--ue_counts", "13", "3", "--output_dir", str(tmp_path / "two")]) == 0
    rows = {}
    for name in ("all", "two"):
        with open(tmp_path / name / "results.csv", newline="") as handle:
            rows[name] = {r["case"]: r for r in csv.DictReader(handle)}
    assert len(rows["all"]) == 13 and sorted(rows["two"]) == ["I=13", "I=3"]
    for case in ("I=3", "I=13"):
        assert rows["two"][case] == rows["all"][case]
    capsys.readouterr()
    for args, message in ((["--ue_counts", "15"], "EvaluateConfig.ue_counts = 15 is invalid; "
                           "allowed: integers in 2..14 (the sizes of --suites ues14)"),
                          (["--suites", "rbgs", "--ue_counts", "4"],
                           "EvaluateConfig.ue_counts = [4] is invalid; allowed: empty unless "
                           "--suites has a UE sweep (ues or ues14)")):
        assert main([*common, *args, "--output_dir", str(tmp_path / "x")]) == 2
        assert message in capsys.readouterr().err


def assert_png(path: Path) -> None:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000, path


def test_the_first_thirty_lines_of_a_figure_all_look_different():
    looks = [tuple(sorted(line_style(k).items())) for k in range(30)]
    assert len(set(looks)) == 30
    assert [style["color"] for style in map(line_style, range(10))] == [f"C{k}" for k in range(10)]


def test_sweep_and_training_figures_are_written(tmp_path):
    rows = rows_of(Evaluator(episodes=4, n_envs=4), [parse_spec("max_weight/dictator")],
                   "tbler")
    assert_png(plot_sweep(rows, "tbler", tmp_path / "tbler.png"))
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text("".join(
        json.dumps({"epoch": e, "leader_utility": 0.3 + 0.01 * e, "follower_utility": 0.2})
        + "\n" for e in range(1, 6)))
    assert_png(plot_training({"run": run}, tmp_path / "training.png"))
    with pytest.raises(ValueError, match="no metrics.jsonl"):
        plot_training({"x": tmp_path}, tmp_path / "t.png")


def test_evaluate_recipe_end_to_end(llm_dir, tmp_path):
    scenario = tmp_path / "short.yaml"
    scenario.write_text(yaml.safe_dump({"scenario": {"cell": {"episode_ttis": 3}}}))
    out = tmp_path / "eval"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "recipes" / "evaluate.py"), "--suites", "rbgs",
         "--episodes", "2", "--seeds", "2", "--n_envs", "2", "--scenario", str(scenario),
         "--disable_tqdm",
         "--policies", "MW=max_weight/dictator", f"LLM=llm:{llm_dir}",
         "--output_dir", str(out)],
        capture_output=True, text=True, timeout=600, cwd=ROOT,
        env={"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin",
             "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "| N=8 | LLM |" in proc.stdout
    records = list(csv.DictReader((out / "results.csv").open()))
    assert len(records) == 12
    assert {r["throughput_mbps_n"] for r in records} == {"4"}  # 2 episodes x 2 seeds, pooled
    assert_png(out / "rbgs.png")
    bad = subprocess.run([sys.executable, str(ROOT / "recipes" / "evaluate.py"), "--policies",
                          "boss/dictator"], capture_output=True, text=True, cwd=ROOT,
                         env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert bad.returncode == 2 and "policy 'boss/dictator' is invalid" in bad.stderr


def test_two_processes_give_the_table_of_one(llm_dir, tmp_path):
    """accelerate launch splits the (case, policy, seed) units over two gloo CPU processes and
    gathers them: the same CSV, byte for byte, as one process."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    args = ["--suites", "rbgs", "--episodes", "2", "--seeds", "2", "--n_envs", "2",
            "--scenario", '{"cell": {"episode_ttis": 2}}', "--disable_tqdm",
            "--policies", "MW=max_weight/dictator", "idle/s_aloha", f"LLM=llm:{llm_dir}"]
    env = {"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin",
           "HF_HUB_OFFLINE": "1", "ACCELERATE_USE_CPU": "true"}
    script = str(ROOT / "recipes" / "evaluate.py")
    one = subprocess.run([sys.executable, script, *args, "--output_dir", str(tmp_path / "one")],
                         capture_output=True, text=True, timeout=600, cwd=ROOT, env=env)
    assert one.returncode == 0, one.stderr[-2000:]
    two = subprocess.run(
        [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes",
         "2", "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
         "--main_process_port", str(port), script, *args, "--output_dir", str(tmp_path / "two")],
        capture_output=True, text=True, timeout=600, cwd=ROOT, env=env)
    assert two.returncode == 0, two.stderr[-3000:]
    table = (tmp_path / "one" / "results.csv").read_text()
    assert table.count("\n") == 1 + 6 * 3  # header + N = 3..8 x three policies
    assert (tmp_path / "two" / "results.csv").read_text() == table
