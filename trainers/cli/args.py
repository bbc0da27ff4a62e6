"""One CLI convention for every ``agentic-mac`` command: dataclasses parsed by TRL's ``TrlParser``.

A command's options are the fields of its config dataclasses. Values come from the dataclass
defaults, then ``--config FILE.yaml`` (a mapping of field names; an optional ``env:`` section sets
environment variables), then the command line (``--field value``; ``--field-name`` is accepted
for ``--field_name``). ``--help`` lists every field with its default and, for ``Literal`` fields,
the allowed values.

Bad input never ends in a traceback: :func:`parse` and :func:`run` turn a missing or malformed
config file, an unknown key, a value argparse or a config's ``__post_init__`` rejects and every
:class:`CLIError` raised by a command's checks into one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import difflib
import importlib.util
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import yaml
from trl import TrlParser

from textgame.config import ConfigError

EXIT_USAGE = 2
CONFIG_DIR = Path(__file__).resolve().parents[2] / "recipes" / "configs"


class CLIError(ValueError):
    """Bad input to a command: the message names the field or file, the value, what is allowed."""


class _Parser(TrlParser):
    """``TrlParser`` whose usage errors raise :class:`CLIError` instead of printing usage."""

    def error(self, message: str):  # argparse's hook for every usage error
        raise CLIError(f"{message} (see --help)")

    def add_argument(self, *args, **kwargs):
        # Field help is prose ("95 % CIs"), not a %-format string: argparse would choke on it.
        if isinstance(kwargs.get("help"), str):
            kwargs["help"] = kwargs["help"].replace("%", "%%")
        return super().add_argument(*args, **kwargs)


def config_path(value: str) -> Path:
    """``--config`` as given, or the name of a packaged config (``tiny_cpu`` ->
    ``recipes/configs/tiny_cpu.yaml``)."""
    path = Path(value)
    if path.is_file():
        return path
    packaged = CONFIG_DIR / (path.name if path.suffix else f"{path.name}.yaml")
    if packaged.is_file() and path.parent == Path("."):
        return packaged
    shipped = sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))
    raise CLIError(f"--config {value!r}: no such file; allowed: a YAML file or one of the "
                   f"packaged configs {shipped}")


def read_yaml(path: Path, what: str) -> dict:
    """A YAML mapping from ``path``; syntax errors name the file and the line."""
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as error:
        raise CLIError(f"{what} {str(path)!r} cannot be read: {error.strerror}") from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise CLIError(f"{what} {str(path)!r}: YAML syntax error{where}: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise CLIError(f"{what} {str(path)!r} holds a {type(data).__name__}; allowed: a YAML "
                       "mapping of field names to values")
    return data


def _split_config(argv: list[str]) -> tuple[str | None, list[str]]:
    """(the ``--config`` value, the other arguments)."""
    rest, value = [], None
    it = iter(argv)
    for arg in it:
        if arg == "--config":
            value = next(it, None)
            if value is None:
                raise CLIError("--config needs a file path")
        elif arg.startswith("--config="):
            value = arg.split("=", 1)[1]
        else:
            rest.append(arg)
    return value, rest


def _apply_config(parser: _Parser, values: dict, path: Path) -> None:
    env = values.pop("env", {})
    if not isinstance(env, dict):
        raise CLIError(f"--config {str(path)!r}: env = {env!r} is invalid; allowed: a mapping "
                       "of environment variables")
    known = {action.dest for action in parser._actions}
    for key in values:
        if key not in known:
            close = difflib.get_close_matches(str(key), sorted(known), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise CLIError(f"--config {str(path)!r}: unknown key {key!r}{hint}; allowed: the "
                           "options listed by --help")
    for key, value in env.items():
        os.environ[str(key)] = str(value)
    parser.set_defaults_with_config(**values)


def parse(dataclass_types: Sequence[type], argv: Sequence[str] | None, prog: str,
          description: str, defaults: dict | None = None) -> tuple:
    """Instances of ``dataclass_types`` from ``defaults`` (the command's own, over the
    dataclasses'), then ``--config``, then the command line."""
    parser = make_parser(dataclass_types, prog, description)
    parser.set_defaults_with_config(**(defaults or {}))
    argv = list(sys.argv[1:] if argv is None else argv)
    config, rest = _split_config(argv)
    if config is not None:
        path = config_path(config)
        _apply_config(parser, read_yaml(path, "--config"), path)
    try:
        parsed = parser.parse_args_into_dataclasses(args=rest)
        return tuple(parsed[:len(dataclass_types)])  # the last is --config's namespace
    except ConfigError as error:
        raise CLIError(str(error)) from None
    except (TypeError, ValueError) as error:  # a value of the YAML file a field cannot take
        if isinstance(error, CLIError):
            raise
        unknown = [a for a in rest if a.startswith("--") and a.split("=")[0] in str(error)]
        if "not used by the HfArgumentParser" in str(error) and unknown:
            raise CLIError(_unknown_option(parser, unknown[0].split("=")[0])) from None
        raise CLIError(str(error).splitlines()[0]) from None


def _unknown_option(parser: _Parser, option: str) -> str:
    options = sorted(o for action in parser._actions for o in action.option_strings
                     if o.startswith("--"))
    close = difflib.get_close_matches(option, options, n=1)
    hint = f" (did you mean {close[0]}?)" if close else ""
    return f"unknown option {option}{hint}; allowed: the options listed by --help"


def make_parser(dataclass_types: Sequence[type], prog: str, description: str) -> _Parser:
    parser = _Parser(list(dataclass_types), prog=prog, description=description,
                     formatter_class=_HelpFormatter)
    parser.add_argument("--config", metavar="FILE.yaml",
                        help="YAML mapping of any of the options below (or the name of a "
                             "packaged config, e.g. tiny_cpu); the command line overrides it")
    return parser


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults in the help, the description's layout kept."""


def run(main: Callable[[Sequence[str] | None], int | None], argv: Sequence[str] | None,
        prog: str) -> int:
    """``main(argv)`` with every :class:`CLIError`/``ConfigError`` as one line and exit 2;
    the project's INFO logs (e.g. 'resuming from checkpoint-N') on stderr."""
    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("trainers").setLevel(logging.INFO)
    try:
        return int(main(argv) or 0)
    except (CLIError, ConfigError) as error:
        print(f"{prog}: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130


def check_output_dir_writable(name: str, value: str | os.PathLike) -> Path:
    """``value`` exists as a directory or can be created, and a file can be written into it."""
    path = Path(value)
    if str(value) == "":
        raise CLIError(f"{name} = '' is invalid; allowed: a directory path")
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".write-test-{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as error:
        raise CLIError(f"{name} = {str(value)!r} is not writable ({error.strerror}); allowed: "
                       "a directory this user can create and write") from None
    return path


def check_run_dir(owner: str, config) -> Path | None:
    """The output_dir / resume_from_checkpoint / overwrite_output_dir policy of
    :func:`trainers.runs.run_dir.start_run`, checked before any model loads (quietly: the
    trainer logs the resume when it happens); the checkpoint a run would resume, or None."""
    from trainers.runs.run_dir import logger, start_run

    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        checkpoint = start_run(owner, config.output_dir, config.resume_from_checkpoint,
                               config.overwrite_output_dir)
    finally:
        logger.setLevel(level)
    return checkpoint


def check_trackers(report_to: Sequence[str]) -> None:
    """Every tracker of ``report_to`` is one accelerate knows and is installed here."""
    from accelerate.tracking import LOGGER_TYPE_TO_CLASS

    for name in report_to:
        if name in ("all", "none"):
            continue
        tracker = LOGGER_TYPE_TO_CLASS.get(name)
        if tracker is None:
            raise CLIError(f"report_to = {name!r} is invalid; allowed: "
                           f"{sorted(LOGGER_TYPE_TO_CLASS)} (or [] for JSONL/CSV only)")
        if not _tracker_available(name):
            raise CLIError(f"report_to = {name!r}: the package is not installed; install it "
                           f"(pip install {_TRACKER_PACKAGES.get(name, name)}) or drop it")


_TRACKER_PACKAGES = {"tensorboard": "'agentic-mac[tensorboard]'", "wandb": "wandb",
                     "comet_ml": "comet-ml", "aim": "aim", "mlflow": "mlflow", "clearml": "clearml",
                     "dvclive": "dvclive", "swanlab": "swanlab", "trackio": "trackio"}


EXTRAS = {"qlora": ("bitsandbytes",), "student": ("onnx", "onnxscript", "onnxruntime"),
          "tensorboard": ("tensorboard",), "smollm": ("gguf",)}
"""The optional extras of pyproject.toml and the modules each one installs."""


def check_extra(extra: str, field: str, value: object, modules: Sequence[str] = ()) -> None:
    """One line when ``field = value`` needs an optional extra (``modules`` of it, default all)
    that is not installed: what is missing and the pip command that installs it."""
    missing = [m for m in modules or EXTRAS[extra] if importlib.util.find_spec(m) is None]
    if missing:
        raise CLIError(f"{field} = {value!r} needs {', '.join(missing)}, which is not installed; "
                       f"allowed: pip install 'agentic-mac[{extra}]', or leave {field} unset")


def _tracker_available(name: str) -> bool:
    import accelerate.utils as utils

    check = getattr(utils, f"is_{name}_available", None)
    return bool(check()) if check is not None else True


def num_threads(requested: int | None) -> int:
    """Torch CPU threads for this process: ``requested``; else ``OMP_NUM_THREADS`` when set (as
    torch itself reads it; note that ``accelerate launch`` sets it to 1 unless given
    ``--num_cpu_threads_per_process``); else the cores this process may use divided among the
    processes of this machine (LOCAL_WORLD_SIZE)."""
    if requested is not None:
        return requested
    omp = os.environ.get("OMP_NUM_THREADS", "").strip()
    if omp.isdigit() and int(omp) >= 1:
        return int(omp)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    local = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    return max(1, (cores or 1) // max(local, 1))


def set_num_threads(requested: int | None) -> int:
    import torch

    n = num_threads(requested)
    torch.set_num_threads(n)
    return n


def load_scenario(text: str | None):
    """A ``ScenarioConfig`` from a YAML file (sections, or under ``scenario``) or a JSON object;
    None gives the design defaults."""
    from textgame.config import ScenarioConfig

    if text is None:
        return ScenarioConfig()
    text = text.strip()
    if text.startswith("{"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise CLIError(f"scenario = {text!r} is not valid JSON ({error})") from None
    else:
        path = Path(text)
        if not path.is_file():
            raise CLIError(f"scenario = {text!r}: no such file; allowed: a YAML file or a JSON "
                           "object")
        data = read_yaml(path, "scenario")
    return ScenarioConfig.from_dict(data.get("scenario", data))
