"""The README's reference parts stay true to the code."""

import dataclasses
from pathlib import Path

import pytest

from textgame.config import CellConfig, ChannelConfig, RewardConfig, TrafficConfig
from trainers.cli.main import COMMANDS

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


@pytest.mark.parametrize("config", [CellConfig, TrafficConfig, ChannelConfig, RewardConfig])
def test_scenario_reference_lists_every_field_with_its_default(config):
    for f in dataclasses.fields(config):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        default = list(default) if isinstance(default, tuple) else default
        assert f"| `{f.name}` | `{default}` |" in README, f.name


def test_every_subcommand_is_in_the_command_table():
    for name in COMMANDS:
        assert f"| `agentic-mac {name}` |" in README, name
