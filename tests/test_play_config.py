"""PlayConfig: what playing a saved policy needs, saved beside every policy, composed by the
trainer's config, and the only config a play path loads."""

import json
from dataclasses import fields

import pytest
from test_imports import loaded_after  # tests/ is on sys.path under pytest

from textgame.config import ConfigError
from trainers.policy.play_config import PLAY_CONFIG, TRAINER_CONFIG, PlayConfig
from trainers.runs.hub import write_trainer_config
from trainers.stackelberg.config import StackelbergPPOConfig


def test_the_trainer_config_composes_play_config_with_one_default_and_help_per_field():
    trainer = {f.name: f for f in fields(StackelbergPPOConfig)}
    for play in fields(PlayConfig):
        if play.name == "temperature":  # training samples from temperature_start to _end
            continue
        assert trainer[play.name].default == play.default, play.name
        assert trainer[play.name].metadata["help"] == play.metadata["help"], play.name
    config = StackelbergPPOConfig(history_ttis=1, prompt_format=1, pag_backend="regex",
                                  temperature_end=0.4, follower_policy="dictator",
                                  trainable_layers=2, scenario={"cell": {"ue_counts": [2]}})
    assert config.play_config() == PlayConfig(
        history_ttis=1, prompt_format=1, pag_backend="regex", temperature=0.4,
        follower_policy="dictator", trainable_layers=2, scenario=config.scenario)


def test_every_saved_policy_carries_its_play_config_and_old_ones_still_read(tmp_path):
    config = StackelbergPPOConfig(history_ttis=1, temperature_end=0.5, legacy_policy="random",
                                  scenario={"cell": {"ue_counts": [4, 6]}})
    write_trainer_config(tmp_path, config)
    assert PlayConfig.read(tmp_path) == config.play_config()
    assert json.loads((tmp_path / PLAY_CONFIG).read_text())["temperature"] == 0.5
    (tmp_path / PLAY_CONFIG).unlink()  # a policy saved before play_config.json existed
    assert PlayConfig.read(tmp_path) == config.play_config()
    trained = json.loads((tmp_path / TRAINER_CONFIG).read_text())
    del trained["prompt_format"]  # ... and before the prompt format field: format 1
    (tmp_path / TRAINER_CONFIG).write_text(json.dumps(trained))
    assert PlayConfig.read(tmp_path).prompt_format == 1
    (tmp_path / TRAINER_CONFIG).unlink()
    assert PlayConfig.read(tmp_path) == PlayConfig()  # neither file: the defaults


@pytest.mark.parametrize(("text", "message"), [
    ('{"temprature": 0.3}', r"play_config.json: unknown field 'temprature'; allowed: "),
    ('{"temperature": 0}', r"PlayConfig.temperature = 0 is invalid; allowed: a finite number > 0"),
    ('{"pag_backend": "xml"}', r"PlayConfig.pag_backend = 'xml' is invalid; allowed: one of "),
    ("[1, 2]", r"play_config.json: a JSON object of fields is required"),
    ("{", r"play_config.json: not valid JSON"),
])
def test_a_bad_play_config_is_one_line_naming_the_field(tmp_path, text, message):
    (tmp_path / PLAY_CONFIG).write_text(text)
    with pytest.raises(ConfigError, match=message):
        PlayConfig.read(tmp_path)


def test_playing_a_saved_policy_loads_no_trainer_config(save_llm, tmp_path):
    """Evaluation and the scheduler API play a saved policy on PlayConfig alone."""
    folder = save_llm(tmp_path / "policy", history_ttis=1, temperature_end=0.7)
    code = f"""
from textgame.config import ScenarioConfig
from textgame.runner import run_episodes
from trainers.evaluation.suites import Evaluator, suite_cases
from trainers.policy.scheduler import load_llm, load_llm_policies
from trainers.specs import parse_spec
base = {{"cell": {{"ue_counts": [2], "n_rbgs": 2, "episode_ttis": 2}}}}
result = Evaluator(episodes=2, n_envs=2).run(parse_spec("llm:{folder}"),
                                              suite_cases("ues", base)[0])
assert (result["invalid_action_rate"] == 0).all(), result
leader, follower = load_llm_policies("{folder}")
assert leader.temperature == 0.7 and leader.text.history_ttis == 1
run_episodes(ScenarioConfig.from_dict(base), leader, follower, 2, 2, 0)
assert load_llm("{folder}")[2].trainable_layers == 0
"""
    loaded = loaded_after(code)
    assert "trainers.evaluation.suites" in loaded and "trainers.policy.player" in loaded
    assert not any(m.startswith("trainers.stackelberg") for m in loaded), sorted(loaded)
