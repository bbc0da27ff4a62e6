"""Bad input to every ``agentic-mac`` command ends in one line on stderr and exit status 2.

Each case runs the command's ``main`` in this process (the ``run_command`` fixture: a
subprocess would spend ~4 s importing torch per case) and asserts the exit status, the message
(the field or file, the value, what is allowed), that nothing else reached stderr (no
traceback, warning or log line) and that no exception escaped. A few cases run as a user would,
in a subprocess of ``python -m trainers.cli.main``: one per command, and the Hub ids, which
need HF_HUB_OFFLINE before huggingface_hub is imported. None of them loads a model: the checks
run first.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


def agentic_mac(*args: str, cwd: Path = ROOT, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "trainers.cli.main", *args], cwd=cwd,
                          env={**ENV, **env}, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, str]:
    d = tmp_path_factory.mktemp("bad")
    (d / "syntax.yaml").write_text("total_epochs: [1, 2\n")
    (d / "unknown.yaml").write_text("totl_epochs: 3\n")
    (d / "list.yaml").write_text("- 1\n- 2\n")
    (d / "marl_algo.yaml").write_text("algo: dqn\n")  # YAML values skip argparse's choices
    (d / "readonly").mkdir()
    (d / "readonly").chmod(0o500)
    return {k: str(d / v) for k, v in (("syntax", "syntax.yaml"), ("unknown", "unknown.yaml"),
                                      ("list", "list.yaml"), ("marl_algo", "marl_algo.yaml"),
                                      ("readonly", "readonly"))} | {
        "dir": str(d)}


COMMANDS = ("train", "evaluate", "train-marl", "simulate")
CASES = [
    *[(cmd, ["--config", "missing.yaml"], "--config 'missing.yaml': no such file")
      for cmd in COMMANDS],
    *[(cmd, ["--config", "{syntax}"], "YAML syntax error at line 2") for cmd in COMMANDS],
    ("train", ["--config", "{unknown}"],
     "unknown key 'totl_epochs' (did you mean 'total_epochs'?)"),
    ("simulate", ["--config", "{list}"], "holds a list; allowed: a YAML mapping"),
    ("train", ["--model_name_or_path", "/nonexistent"],
     "model_name_or_path = '/nonexistent': no such directory; allowed: a local model"),
    ("train", ["--model_name_or_path", "nobody/no-such-model"],
     "model_name_or_path = 'nobody/no-such-model' cannot be loaded"),
    ("train", ["--n_envs", "0"], "StackelbergPPOConfig.n_envs = 0 is invalid; allowed: an "
     "integer >= 1"),
    ("train", ["--seed", "-5"], "StackelbergPPOConfig.seed = -5 is invalid"),
    ("train", ["--output_dir", ""], "StackelbergPPOConfig.output_dir = '' is invalid"),
    ("train", ["--pag_backend", "magic"], "argument --pag_backend/--pag-backend: invalid choice: "
     "'magic' (choose from 'llguidance', 'regex', 'none')"),
    ("train", ["--total_epochs", "many"],
     "argument --total_epochs/--total-epochs: invalid int value: 'many'"),
    ("train", ["--report_to", "bogus"], "report_to = 'bogus' is invalid; allowed:"),
    ("train", ["--use_peft", "false"], "use_peft = False is not supported"),
    ("train", ["--output_dir", "{readonly}/run"], "is not writable"),
    ("train", ["--scenario", '{"cell": {"n_rbgs": 0}}'], "CellConfig.n_rbgs = 0 is invalid"),
    ("train", ["--init_adapters", "/nonexistent"], "StackelbergPPOConfig.init_adapters = "
     "'/nonexistent' is invalid; allowed: an existing policy directory or a Hub repository id"),
    ("train", ["--init_adapters", "{dir}"], "allowed: a complete policy directory (policy "
     "directory"),
    ("train", ["--init_adapters", "a/b", "--expert_seeding", "true"], "init_adapters = 'a/b' is "
     "invalid; allowed: None when expert_seeding is set"),
    ("train-marl", ["--algo", "dqn"], "argument --algo: invalid choice: 'dqn' (choose from "
     "'mappo', 'gmac')"),
    ("train-marl", ["--config", "{marl_algo}"], "MARLConfig.algo = 'dqn' is invalid; allowed: one "
     "of ['mappo', 'gmac']"),
    ("train-marl", ["--seed", "-5"], "MARLConfig.seed = -5 is invalid"),
    ("train-marl", ["--ues", "0"], "CellConfig.ue_counts = (0,) is invalid"),
    ("train-marl", ["--output_dir", "{readonly}/run"], "is not writable"),
    ("evaluate", ["--policies", "boss/dictator"], "policy 'boss/dictator' is invalid"),
    ("evaluate", ["--policies", "marl:/nonexistent"], "EvaluateConfig.policies = "
     "'marl:/nonexistent' is invalid; allowed: 'marl:' followed by an existing directory"),
    ("evaluate", ["--policies", "llm:someone/not-a-repo"], "EvaluateConfig.policies = "
     "'llm:someone/not-a-repo' is invalid; allowed: a policy directory, or a Hub repository id "
     "reachable from here or in the local cache (resolving it failed: "),
    ("train", ["--init_adapters", "someone/not-a-repo"], "StackelbergPPOConfig.init_adapters = "
     "'someone/not-a-repo' is invalid; allowed: a policy directory, or a Hub repository id"),
    ("evaluate", ["--suites", "everything"], "EvaluateConfig.suites = 'everything' is invalid"),
    ("evaluate", ["--training_runs", "X=/nonexistent"], "training_runs = 'X=/nonexistent': "
     "'/nonexistent' has no metrics.jsonl"),
    ("evaluate", ["--episodes", "0"], "EvaluateConfig.episodes = 0 is invalid"),
    ("evaluate", ["--num_threads", "0"], "EvaluateConfig.num_threads = 0 is invalid"),
    ("simulate", ["--output_dir", "{readonly}/out"], "is not writable"),
    ("simulate", ["--scenario", "nope.yaml"], "scenario = 'nope.yaml': no such file"),
    ("bogus", [], "unknown subcommand 'bogus'; allowed:"),
]


HUB_IDS = ("nobody/no-such-model", "llm:someone/not-a-repo", "someone/not-a-repo")
IN_PROCESS = [case for case in CASES if not set(case[1]) & set(HUB_IDS)]
# as a user runs them: one case per command (its console path), the Hub ids, the bad subcommand
IN_A_PROCESS = ([next(case for case in CASES if case[0] == command) for command in COMMANDS]
                + [case for case in CASES if case not in IN_PROCESS or case[0] == "bogus"])


def _expand(files: dict[str, str], args: list[str]) -> list[str]:
    if os.geteuid() == 0 and "readonly" in " ".join(args):
        args = [a.replace("{readonly}", "/proc/agentic-mac") for a in args]  # root writes 0o500
    for name, value in files.items():
        args = [a.replace("{" + name + "}", value) for a in args]
    return args


def _assert_one_line(command: str, result, message: str) -> None:
    """``result``: a CompletedProcess or the ``run_command`` fixture's CommandResult."""
    returncode, stderr = result.returncode, result.stderr
    assert returncode == 2, stderr[-3000:]
    assert "Traceback" not in stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert message in lines[0]
    assert lines[0].startswith(f"agentic-mac {command}: error: " if command in COMMANDS
                               else "agentic-mac: error: ")


def _ids(cases):
    return [f"{c}-{' '.join(a)[:40]}" for c, a, _ in cases]


@pytest.mark.parametrize("command, args, message", IN_PROCESS, ids=_ids(IN_PROCESS))
def test_bad_input_is_one_line_and_exit_2(files, run_command, command, args, message):
    result = run_command(command, *_expand(files, args), cwd=files["dir"])
    _assert_one_line(command, result, message)
    assert result.warnings == [] and result.logs == []


@pytest.mark.parametrize("command, args, message", IN_A_PROCESS, ids=_ids(IN_A_PROCESS))
def test_the_console_command_gives_the_same_one_line(files, command, args, message):
    result = agentic_mac(command, *_expand(files, args), cwd=Path(files["dir"]))
    _assert_one_line(command, result, message)


@pytest.mark.parametrize("config", sorted(p.stem for p in (ROOT / "recipes" / "configs").glob(
    "*.yaml")))
def test_every_packaged_config_parses_under_its_command(config):
    """A key a config no longer has (a renamed field) would refuse the recipe at start."""
    from trainers.cli.args import parse
    from trainers.cli.train import parse_args
    from trainers.cli.train_marl import CellOverrides
    from trainers.marl.config import MARLConfig

    if config in ("mappo_cpu", "gmac_cpu"):
        (marl, _) = parse((MARLConfig, CellOverrides), ["--config", config], "x", "")
        assert marl.algo == config.split("_")[0]
    else:
        args, model_args = parse_args(["--config", config])
        assert args.output_dir and model_args.model_name_or_path


@pytest.mark.parametrize("command", ["train", "seed", "evaluate", "train-marl", "simulate",
                                     "distill"])
def test_every_command_prints_its_help(command, capsys):
    """Help is prose: a '%' in a field's help ("95 % CI") must not break argparse."""
    from trainers.cli.main import COMMANDS, main

    assert command in COMMANDS
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage:") and "--output_dir" in out


@pytest.mark.parametrize("env, expected", [({"OMP_NUM_THREADS": "3"}, 3),
                                           ({"OMP_NUM_THREADS": "3", "LOCAL_WORLD_SIZE": "2"}, 3),
                                           ({"OMP_NUM_THREADS": "bogus"}, None), ({}, None)])
def test_num_threads_defaults_to_omp_num_threads_then_the_cores(monkeypatch, env, expected):
    from trainers.cli.args import num_threads

    for name in ("OMP_NUM_THREADS", "LOCAL_WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    cores = len(os.sched_getaffinity(0))
    assert num_threads(None) == (cores if expected is None else expected)
    assert num_threads(5) == 5
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert num_threads(None) == max(1, cores // 2)


@pytest.mark.parametrize("variable, value, message", [
    ("ACCELERATE_USE_DEEPSPEED", "true", "accelerate launch with DeepSpeed "
     "(ACCELERATE_USE_DEEPSPEED) is not supported by StackelbergPPOTrainer; allowed: "
     "single-process or multi-process"),
    ("ACCELERATE_USE_FSDP", "true", "accelerate launch with FSDP (ACCELERATE_USE_FSDP) is not "
     "supported"),
    ("ACCELERATE_GRADIENT_ACCUMULATION_STEPS", "4", "accelerate launch "
     "--gradient_accumulation_steps 4 is not used by StackelbergPPOTrainer; allowed: 1 there, "
     "and gradient_accumulation_steps in the config (now 1)")])
def test_launches_the_trainer_does_not_do_are_refused_in_one_line(tmp_path, run_command,
                                                                   monkeypatch, variable, value,
                                                                   message):
    monkeypatch.setenv(variable, value)  # as accelerate launch sets it for its processes
    result = run_command("train", "--output_dir", str(tmp_path / "run"))
    _assert_one_line("train", result, message)
    assert result.warnings == [] and result.logs == []
