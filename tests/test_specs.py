"""Policy specs (trainers.specs): one grammar, one-line errors, and every kind through every
command that takes specs (evaluate, simulate, distill's --teacher). The artefacts are untrained
and tiny (conftest: ``save_llm``, ``marl_dir``, ``student_dir``); N = K = 4, T = 2."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from textgame.config import CellConfig, ConfigError
from textgame.policies import DictatorFollower, MaxWeightLeader, RandomFollower
from trainers.specs import (
    PolicySpec,
    SpecError,
    build_policy,
    build_role,
    check_spec,
    parse_spec,
)
from trainers.student.teachers import (
    HeuristicTeacher,
    LLMTeacher,
    MARLTeacher,
    StudentTeacher,
    Teacher,
    build_teacher,
)

pytestmark = pytest.mark.usefixtures("one_thread")

ROOT = Path(__file__).resolve().parents[1]
SHORT = json.dumps({"cell": {"episode_ttis": 2}})
LLM_CELL = {"cell": {"ue_counts": [2, 3], "episode_ttis": 2}}


@pytest.fixture(scope="module")
def llm_dir(save_llm, tmp_path_factory) -> str:
    return save_llm(tmp_path_factory.mktemp("specs-llm") / "policy", scenario=LLM_CELL)


@pytest.fixture(scope="module")
def specs(llm_dir, marl_dir, student_dir) -> dict[str, str]:
    """A labelled pair spec of every kind."""
    return {"heuristic": "MW=max_weight/dictator", "marl": f"MARL=marl:{marl_dir}",
            "student": f"Student=student:{student_dir}", "llm": f"LLM=llm:{llm_dir}"}


# ------------------------------------------------------------------------------- parsing
def test_a_heuristic_pair_is_labelled_by_its_text_unless_named():
    assert parse_spec("max_weight/dictator") == PolicySpec(
        "max_weight/dictator", "heuristic", "max_weight/dictator")
    named = parse_spec("S-ALOHA=idle/s_aloha")
    assert (named.label, named.target, named.text) == ("S-ALOHA", "idle/s_aloha",
                                                       "S-ALOHA=idle/s_aloha")


@pytest.mark.parametrize("kind", ["marl", "student", "llm"])
def test_learned_kinds_keep_their_directory_or_hub_id(kind):
    spec = parse_spec(f"{kind}:user/agentic-mac")
    assert (spec.kind, spec.path, spec.label) == (kind, "user/agentic-mac",
                                                  f"{kind}:user/agentic-mac")


def test_placeholders_are_filled_from_the_cell_mappo_s_style():
    spec = parse_spec("MAPPO-S=marl:runs/mappo-I{ues}-N{rbgs}/final")
    assert (spec.kind, spec.label) == ("marl", "MAPPO-S")
    assert spec.path_for(CellConfig(ue_counts=(5,), n_rbgs=4)) == "runs/mappo-I5-N4/final"


def test_a_role_takes_one_heuristic_name_or_a_learned_kind():
    assert parse_spec("max_weight", "leader").target == "max_weight"
    assert parse_spec("UEs=s_aloha", "follower").label == "UEs"
    assert parse_spec("student:runs/s", "follower").kind == "student"


@pytest.mark.parametrize("text, role, message", [
    ("max_weight", None, "policy 'max_weight' is invalid; allowed: 'LEADER/FOLLOWER' with "
                         "LEADER in ['idle', 'max_weight', 'random', 'round_robin'] and FOLLOWER "
                         "in ['dictator', 'random', 's_aloha'], 'marl:DIR', 'student:DIR' or "
                         "'llm:DIR_OR_REPO', each optionally prefixed by 'label='"),
    ("max_weight/nobody", None, "policy 'max_weight/nobody' is invalid; allowed: "
                                "'LEADER/FOLLOWER' with LEADER in"),
    ("boss/dictator", None, "policy 'boss/dictator' is invalid; allowed: 'LEADER/FOLLOWER'"),
    ("llm:", None, "policy 'llm:' is invalid; allowed: 'llm:' followed by a directory or Hub id"),
    ("marl:runs/I{n}", None, "policy 'marl:runs/I{n}' is invalid; allowed: 'marl:DIR' with no "
                             "placeholders but {ues} and {rbgs}"),
    ("dictator", "leader", "policy 'dictator' is invalid; allowed: one of ['idle', "
                           "'max_weight', 'random', 'round_robin'], 'marl:DIR', 'student:DIR' "
                           "or 'llm:DIR_OR_REPO', each optionally prefixed by 'label='"),
    ("max_weight/dictator", "follower", "allowed: one of ['dictator', 'random', 's_aloha']"),
])
def test_bad_specs_name_the_spec_and_what_is_allowed(text, role, message):
    with pytest.raises(SpecError) as error:
        parse_spec(text, role)
    assert message in str(error.value) and "\n" not in str(error.value)


def test_a_spec_error_names_the_field_and_is_a_config_error():
    with pytest.raises(ConfigError, match=r"^SimulateConfig.leader = 'a' is invalid; allowed: "
                                          r"one of \["):
        parse_spec("a", "leader", "SimulateConfig.leader")
    assert issubclass(SpecError, ValueError)  # callers catching ValueError keep working


# -------------------------------------------------------------------------------- checks
@pytest.mark.parametrize("kind", ["marl", "student"])
def test_a_missing_directory_is_refused_before_any_work(kind):
    with pytest.raises(SpecError, match=rf"^X.policies = '{kind}:/nonexistent' is invalid; "
                                        rf"allowed: '{kind}:' followed by an existing directory"):
        check_spec(parse_spec(f"{kind}:/nonexistent"), "X.policies")


def test_an_incomplete_llm_directory_is_refused_and_placeholders_wait_for_the_cell(tmp_path):
    with pytest.raises(SpecError, match=r"allowed: a complete policy directory \(policy "):
        check_spec(parse_spec(f"llm:{tmp_path}"), "X.policies")
    check_spec(parse_spec("marl:/nonexistent/I{ues}"), "X.policies")  # checked when built
    check_spec(parse_spec("max_weight/dictator"), "X.policies")


@pytest.mark.parametrize("kind, missing", [("marl", "no MARL model directory"),
                                           ("student", "no student directory")])
def test_building_a_target_that_is_none_names_the_case(kind, missing, tmp_path):
    spec = parse_spec(f"P={kind}:{tmp_path}/I{{ues}}")
    with pytest.raises(SpecError, match=rf"^policy 'P={kind}:.*' is invalid; allowed: '{kind}:"
                                        rf"DIR' with DIR a .*; there is {missing} "
                                        rf".*/I4 \(for I=4\)$"):
        build_policy(spec, CellConfig(ue_counts=(4,)), where="I=4")


def test_parsing_and_checking_import_no_torch_or_transformers():
    code = ("import sys, trainers.specs as s\n"
            "s.check_spec(s.parse_spec('max_weight/dictator'), 'X.policies')\n"
            "s.build_policy(s.parse_spec('max_weight/dictator'), s.CellConfig())\n"
            "print(sorted({'torch', 'transformers', 'trl', 'peft'} & set(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                         timeout=120, env={"OMP_NUM_THREADS": "1", "PATH": ""})
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]"


# -------------------------------------------------------------------------------- builds
def test_build_policy_gives_each_kind_as_textgame_policies(specs):
    from trainers.marl import MARLFollower, MARLLeader
    from trainers.policy.scheduler import LLMFollower, LLMLeader
    from trainers.student.policies import StudentFollower, StudentLeader

    expected = {"heuristic": (MaxWeightLeader, DictatorFollower),
                "marl": (MARLLeader, MARLFollower), "student": (StudentLeader, StudentFollower),
                "llm": (LLMLeader, LLMFollower)}
    for kind, text in specs.items():
        leader, follower = build_policy(parse_spec(text), CellConfig())
        assert (type(leader), type(follower)) == expected[kind], kind


def test_a_role_of_a_pair_or_of_a_learned_spec(marl_dir):
    from trainers.marl import MARLFollower

    cell = CellConfig()
    assert isinstance(build_role(parse_spec("idle/random"), "follower", cell), RandomFollower)
    assert isinstance(build_role(parse_spec("max_weight", "leader"), "leader", cell),
                      MaxWeightLeader)
    assert isinstance(build_role(parse_spec(f"marl:{marl_dir}"), "follower", cell), MARLFollower)
    with pytest.raises(SpecError, match="allowed: 'LEADER/FOLLOWER' .a heuristic pair."):
        build_policy(parse_spec("max_weight", "leader"), cell)


# ------------------------------------------------------------------------------ teachers
def test_each_kind_of_teacher_is_its_own_type_with_its_trained_d_of_i(specs):
    expected = {"heuristic": (HeuristicTeacher, None), "marl": (MARLTeacher, (2,)),
                "student": (StudentTeacher, None), "llm": (LLMTeacher, (2, 3))}
    for kind, text in specs.items():
        teacher = build_teacher(text, CellConfig())
        assert (type(teacher), teacher.ue_counts) == expected[kind], kind
    with pytest.raises(TypeError):
        Teacher(*build_policy(parse_spec("max_weight/dictator"), CellConfig()))  # abstract


def test_a_marl_teacher_learns_the_grants_of_the_executed_dcm(marl_dir):
    teacher = build_teacher(f"marl:{marl_dir}", CellConfig())
    teacher.leader.reset(1, 3, 4, np.random.default_rng(0))
    active = np.array([[True, False, True]])
    teacher.executed(np.array([[2, 0, 1, 2]]), active)  # RBGs 0, 3 to the 2nd active UE
    np.testing.assert_array_equal(teacher.leader.features.grants[0], [
        [False, False, True, False], [False] * 4, [True, False, False, True]])


# ---------------------------------------------------------------- every kind, every command
def test_evaluate_plays_every_kind(specs, tmp_path, capsys):
    from trainers.cli.evaluate import main

    assert main(["--suites", "stress", "--policies", *specs.values(), "--episodes", "1",
                 "--n_envs", "1", "--scenario", SHORT, "--output_dir", str(tmp_path),
                 "--disable_tqdm", "true", "--num_threads", "1"]) == 0
    rows = list(csv.DictReader(io.StringIO((tmp_path / "results.csv").read_text())))
    assert [r["policy"] for r in rows] == ["MW", "MARL", "Student", "LLM"]
    assert all(float(r["throughput_mbps_n"]) == 1 for r in rows)


def test_simulate_plays_every_kind_in_each_role(specs, capsys):
    from trainers.cli.simulate import main

    leaders = ["max_weight", *(t for k, t in specs.items() if k != "heuristic")]
    followers = ["dictator", *(t for k, t in specs.items() if k != "heuristic")]
    assert main(["--leader", *leaders, "--followers", *followers, "--ues", "2", "--episodes",
                 "1", "--n_envs", "1", "--scenario", SHORT, "--format", "csv",
                 "--disable_tqdm"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [(r["leader"], r["followers"]) for r in rows] == [
        ("max_weight", "dictator"), ("MARL", "MARL"), ("Student", "Student"), ("LLM", "LLM")]


@pytest.mark.parametrize("kind", ["heuristic", "marl", "student", "llm"])
def test_distill_takes_every_kind_as_teacher(kind, specs, tmp_path, capsys):
    from trainers.cli.distill import main

    assert main(["--teacher", specs[kind], "--scenario", SHORT, "--ue_counts", "2",
                 "--eval_ues", "2", "--bc_episodes", "1", "--dagger_rounds", "1",
                 "--dagger_episodes", "1", "--n_envs", "1", "--epochs_per_round", "1",
                 "--history_len", "1", "--leader_hidden", "8", "--follower_hidden", "8",
                 "--eval_episodes", "1", "--export_onnx", "false",
                 "--output_dir", str(tmp_path)]) == 0
    assert (tmp_path / "final" / "student_config.json").is_file()
    assert "| I |" in capsys.readouterr().out  # the retention table


@pytest.mark.parametrize("command, args, message", [
    ("simulate", ["--leader", "student:/nonexistent"], "SimulateConfig.leader = "
     "'student:/nonexistent' is invalid; allowed: 'student:' followed by an existing directory"),
    ("simulate", ["--followers", "max_weight"], "SimulateConfig.followers = 'max_weight' is "
     "invalid; allowed: one of ['dictator', 'random', 's_aloha']"),
    ("evaluate", ["--policies", "student:/nonexistent"], "EvaluateConfig.policies = "
     "'student:/nonexistent' is invalid; allowed: 'student:' followed by an existing directory"),
    ("distill", ["--teacher", "max_weight"], "DistillConfig.teacher = 'max_weight' is invalid; "
     "allowed: 'LEADER/FOLLOWER' with LEADER in"),
])
def test_every_command_refuses_a_bad_spec_in_one_line(command, args, message, tmp_path, capsys):
    import importlib

    main = importlib.import_module(f"trainers.cli.{command}").main
    assert main([*args, "--output_dir", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "out").exists()  # refused before any work

