"""``PlayConfig``: what playing a saved policy needs, and nothing of its training.

A trained policy is played by the scheduler API (:mod:`trainers.policy.scheduler`), evaluation
(:mod:`trainers.evaluation.suites`), the student's teachers and the Hub loader. They need the
text layer the adapters learnt (design §4: prompt format, k TTIs of history, chat template), the
grammar backend (§5), the sampling temperature, who played the UEs (the Dictator ablation), the
training cell and the adapters' k (§6.10). :class:`~trainers.stackelberg.config.
StackelbergPPOConfig` composes it: its fields of the same names take their defaults and help
from here, and :meth:`~trainers.stackelberg.config.StackelbergPPOConfig.play_config` builds it.

Every saved policy carries ``play_config.json`` beside its adapters; a policy saved before it
existed plays from its ``trainer_config.json`` (``temperature_end`` as the temperature, prompt
format 1 when that config predates the field), and one with neither from the defaults.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

from textgame.config import (
    ConfigError,
    ScenarioConfig,
    check_int_at_least,
    check_positive,
    fail_field,
    scenario_field,
)
from textgame.config import help_field as _help
from textgame.policies import FOLLOWERS
from textgame.prompts import TextConfig

OWNER = "PlayConfig"
PLAY_CONFIG = "play_config.json"
TRAINER_CONFIG = "trainer_config.json"  # the StackelbergPPOConfig a policy was trained with
PAG_BACKENDS = ("llguidance", "regex", "none")


@dataclass
class PlayConfig:
    """How a saved policy plays: its text layer, grammar, temperature, UEs and adapters' k."""

    scenario: dict | str | None = _help(
        "The cell (design §2) as a mapping (YAML) or a JSON string with sections cell, traffic, "
        "channel, reward; None = design defaults (train I ~ U{3, 4, 5}, N = 4, T = 50).",
        default=None)
    history_ttis: int = _help("k: TTIs of history in every prompt (design §4).", default=0)
    prompt_format: int = _help(
        "Prompt format version, saved with the adapters (design §4.4): 2 = every follower "
        "prompt starts with the same meta-prompt and names the UE in its observation (one "
        "shared prefix for all UEs); 1 = the UE's number in its meta-prompt (runs saved "
        "before the field existed play as 1).", default=2)
    use_chat_template: bool = _help(
        "Render prompts with the tokenizer's chat template when it has one.", default=True)
    pag_backend: Literal["llguidance", "regex", "none"] = _help(
        "PAG masking (design §5): 'llguidance' (CFG, default), 'regex' (outlines_core DFA) or "
        "'none' (free generation, lenient parsing: the ablation).", default="llguidance")
    temperature: float = _help(
        "Sampling temperature of play (a trained run's temperature_end).", default=0.3)
    follower_policy: Literal["llm", "dictator", "s_aloha", "random"] = _help(
        "Who plays the UEs: 'llm' (the follower adapter, trained) or a textgame heuristic "
        "follower ('dictator' = obedient UEs: the paper's Dictator ablation, leader trained "
        "alone; 's_aloha'; 'random').", default="llm")
    legacy_policy: Literal["s_aloha", "dictator", "random"] = _help(
        "The legacy UEs' heuristic (paper App. B-C: S-ALOHA).", default="s_aloha")
    trainable_layers: int = _help(
        "k: both roles' LoRA adapters on the top k decoder layers only (PEFT "
        "layers_to_transform); the layers below are the frozen trunk, whose states the rollout "
        "keeps so the PPO update, the KL reference and the value heads run the top k layers "
        "only (design §6.10; the same gradients). 0 = every layer.", default=0)

    def __post_init__(self) -> None:
        check_play_fields(OWNER, self)
        check_positive(OWNER, "temperature", self.temperature)

    # ------------------------------------------------------------------------- derived
    def scenario_config(self) -> ScenarioConfig:
        return ScenarioConfig.from_dict(self.scenario)

    def text_config(self) -> TextConfig:
        return TextConfig(history_ttis=self.history_ttis, prompt_format=self.prompt_format)

    # ------------------------------------------------------------------------ on disk
    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(asdict(self), default=str))

    def save(self, folder: str | Path) -> None:
        text = json.dumps(self.to_dict(), indent=2) + "\n"
        (Path(folder) / PLAY_CONFIG).write_text(text, encoding="utf-8")

    @classmethod
    def from_dict(cls, values: dict[str, Any], where: str = OWNER) -> PlayConfig:
        """From a saved ``play_config.json`` mapping; an unknown key is one error line."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"{where}: unknown field {unknown[0]!r}; allowed: {sorted(known)}")
        return cls(**values)

    @classmethod
    def from_trainer_config(cls, trained: dict[str, Any]) -> PlayConfig:
        """From the ``trainer_config.json`` of a policy saved before ``play_config.json``."""
        saved = {"prompt_format": 1, **trained}  # a config saved before the field: format 1
        values = {f.name: saved[f.name] for f in fields(cls) if f.name in saved}
        if "temperature_end" in saved:
            values["temperature"] = saved["temperature_end"]
        return cls(**values)

    @classmethod
    def read(cls, folder: str | Path) -> PlayConfig:
        """The play config saved in a policy directory (see the module docstring)."""
        folder = Path(folder)
        if (folder / PLAY_CONFIG).is_file():
            return cls.from_dict(_json_object(folder / PLAY_CONFIG), str(folder / PLAY_CONFIG))
        if (folder / TRAINER_CONFIG).is_file():
            return cls.from_trainer_config(_json_object(folder / TRAINER_CONFIG))
        return cls()


def _json_object(path: Path) -> dict[str, Any]:
    try:
        values = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ConfigError(f"{path}: not valid JSON ({error.msg}, line {error.lineno})") from None
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: a JSON object of fields is required")
    return values


def check_play_fields(owner: str, config: Any) -> None:
    """Validate the play fields of ``config`` (a PlayConfig or a config that composes one),
    naming ``owner`` in the one-line error; normalises ``scenario`` to a mapping."""
    config.scenario = scenario_field(owner, config.scenario)
    check_int_at_least(owner, "history_ttis", config.history_ttis, 0)
    check_int_at_least(owner, "trainable_layers", config.trainable_layers, 0)
    TextConfig(history_ttis=config.history_ttis, prompt_format=config.prompt_format)
    if not isinstance(config.use_chat_template, bool):
        fail_field(owner, "use_chat_template", config.use_chat_template, "True or False")
    if config.pag_backend not in PAG_BACKENDS:
        fail_field(owner, "pag_backend", config.pag_backend, f"one of {list(PAG_BACKENDS)}")
    if config.follower_policy != "llm" and config.follower_policy not in FOLLOWERS:
        fail_field(owner, "follower_policy", config.follower_policy,
                   f"'llm' or one of {sorted(FOLLOWERS)}")
    if config.legacy_policy not in FOLLOWERS:
        fail_field(owner, "legacy_policy", config.legacy_policy, f"one of {sorted(FOLLOWERS)}")


def play_field(name: str) -> Any:
    """A ``dataclasses.field`` with the default and help of PlayConfig's field ``name``, for a
    config that composes PlayConfig (one home for each play field's meaning)."""
    source = {f.name: f for f in fields(PlayConfig)}[name]
    return field(default=source.default, metadata=dict(source.metadata))
