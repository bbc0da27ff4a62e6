"""Shared fixtures."""

import logging
import warnings
from dataclasses import dataclass

import pytest
import torch


@pytest.fixture(scope="module")
def one_thread():
    """The tiny model gains nothing from threads; on a shared 2-core CPU they only spin."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_path(tmp_path_factory) -> str:
    """Directory of the tiny offline model (named_models), built once per test session."""
    from trainers.policy.named_models import build_tiny_model

    model, _ = build_tiny_model(tmp_path_factory.mktemp("tiny-models"))
    return model.name_or_path


@pytest.fixture(scope="session")
def save_llm(tiny_path):
    """``save_llm(folder, **config)``: an untrained tiny policy saved as a run's ``final/``
    (adapters, value heads, trainer_config.json of ``StackelbergPPOConfig(**config)``)."""
    from trl import ModelConfig

    from trainers.policy.models import StackelbergPolicy
    from trainers.runs.hub import write_trainer_config
    from trainers.stackelberg.config import StackelbergPPOConfig

    def save(folder, **config) -> str:
        folder.mkdir()
        config = StackelbergPPOConfig(value_head_hidden=16, **config)
        policy = StackelbergPolicy.from_model_config(
            ModelConfig(model_name_or_path=tiny_path, lora_r=4, lora_alpha=8), config)
        policy.save_adapters(folder)
        write_trainer_config(folder, config)
        return str(folder)

    return save


@pytest.fixture(scope="session")
def marl_dir(tmp_path_factory) -> str:
    """An untrained tiny G-MAC model (N = K = 4, trained D(I) = {2}) saved as
    ``MARLTrainer.save_model`` does: a ``marl:`` spec for any I."""
    from trainers.marl import MARLAgents, MARLConfig

    config = MARLConfig(algo="gmac", scenario={"cell": {"ue_counts": [2], "episode_ttis": 4}},
                        ue_hidden=[8], ue_latent=8, bs_hidden=[8], bs_latent=8,
                        encoder_hidden=[8], embedding_dim=8, dcm_embedding_dim=4, gru_hidden=8,
                        critic_hidden=[8])
    return str(MARLAgents(config).save(tmp_path_factory.mktemp("marl") / "final"))


@pytest.fixture(scope="session")
def student_dir(tmp_path_factory) -> str:
    """An untrained tiny student (N = K = 4, greedy) saved as the distiller does: a
    ``student:`` spec for any I."""
    from textgame.config import CellConfig
    from trainers.student.features import CellShape
    from trainers.student.model import StudentModel

    torch.manual_seed(0)
    model = StudentModel(CellShape.of(CellConfig()), 1, 8, [8], teacher="max_weight/dictator")
    return str(model.save(tmp_path_factory.mktemp("student") / "final"))


@dataclass
class CommandResult:
    """What a user of ``agentic-mac ARGS`` sees: the exit status, stderr, and the warnings and
    log records that would have reached stderr in a process of its own."""
    returncode: int
    stderr: str
    warnings: list[str]
    logs: list[str]


@pytest.fixture
def run_command(monkeypatch, capsys, caplog):
    """``run_command(*args, cwd=None)``: ``agentic-mac ARGS`` in this process, through the
    ``main`` the console script calls, as a :class:`CommandResult`. A subprocess spends ~4 s
    importing torch before it reads its arguments; what needs a process of its own (the console
    script itself, HF_HUB_OFFLINE, which huggingface_hub reads at import) stays a subprocess
    (tests/test_cli_errors.py). The command's global state (torch
    threads, the project's log level, the working directory) is restored afterwards."""
    from trainers.cli.main import main

    threads, level = torch.get_num_threads(), logging.getLogger("trainers").level
    monkeypatch.setenv("OMP_NUM_THREADS", "1")

    def run(*args: str, cwd=None) -> CommandResult:
        if cwd is not None:
            monkeypatch.chdir(cwd)
        capsys.readouterr()
        caplog.clear()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("default")  # what Python shows outside __main__
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            warnings.filterwarnings("ignore", category=PendingDeprecationWarning)
            try:
                status = main(list(args))
            except SystemExit as exit_:  # argparse's own exits
                status = exit_.code
        shown = [r for r in caplog.records  # the root logger's WARNING, the project's INFO
                 if r.levelno >= logging.WARNING
                 or (r.name.startswith("trainers") and r.levelno >= logging.INFO)]
        return CommandResult(int(status or 0), capsys.readouterr().err,
                             [f"{w.category.__name__}: {w.message}" for w in caught],
                             [r.getMessage() for r in shown])

    yield run
    torch.set_num_threads(threads)
    logging.getLogger("trainers").setLevel(level)
