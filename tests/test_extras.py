"""Optional features name their extra: a missing one is one line (exit 2) with the pip command,
before any work. Core install = what the main job needs (pyproject.toml)."""

import importlib.util
import sys

import pytest

from textgame.config import ConfigError

MESSAGE = ("{field} = {value!r} needs {missing}, which is not installed; allowed: pip install "
           "'agentic-mac[{extra}]', or leave {field} unset")


@pytest.fixture
def without(monkeypatch):
    """``without(*modules)``: importlib.util.find_spec says they are not installed."""
    real = importlib.util.find_spec

    def hide(*modules):
        monkeypatch.setattr(importlib.util, "find_spec",
                            lambda name, *a, **k: None if name in modules else real(name, *a, **k))

    return hide


def only_error(capsys) -> str:
    (line,) = capsys.readouterr().err.strip().splitlines()
    return line


def test_qlora_without_bitsandbytes(without, capsys, tmp_path):
    from trainers.cli.train import main

    without("bitsandbytes")
    assert main(["--load_in_4bit", "true", "--output_dir", str(tmp_path)]) == 2
    assert only_error(capsys) == "agentic-mac train: error: " + MESSAGE.format(
        field="load_in_4bit", value=True, missing="bitsandbytes", extra="qlora")


def test_distill_without_the_student_extra(without, capsys, tmp_path):
    from trainers.cli.distill import main

    without("onnx", "onnxscript")
    assert main(["--teacher", "max_weight/dictator", "--output_dir", str(tmp_path)]) == 2
    assert only_error(capsys) == "agentic-mac distill: error: " + MESSAGE.format(
        field="export_onnx", value=True, missing="onnx, onnxscript", extra="student")
    assert not list(tmp_path.iterdir())  # before any work


def test_onnx_runtime_without_onnxruntime(monkeypatch):
    from trainers.student.onnx import session

    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime -> ImportError
    with pytest.raises(ConfigError, match=r"needs onnxruntime, which is not installed; allowed: "
                                          r"pip install 'agentic-mac\[student\]'"):
        session("leader.onnx")


def test_tensorboard_without_its_extra(monkeypatch):
    import accelerate.utils

    from trainers.cli.args import CLIError, check_trackers

    monkeypatch.setattr(accelerate.utils, "is_tensorboard_available", lambda: False)
    with pytest.raises(CLIError, match=r"report_to = 'tensorboard': the package is not installed; "
                                       r"install it \(pip install 'agentic-mac\[tensorboard\]'\)"):
        check_trackers(["tensorboard"])
