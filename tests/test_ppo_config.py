"""StackelbergPPOConfig: design defaults, validation naming the field, TrlParser round trip."""

import pytest
from trl import ModelConfig, TrlParser

from textgame.config import ConfigError
from trainers.stackelberg.config import StackelbergPPOConfig


def test_spec_defaults():
    c = StackelbergPPOConfig()
    assert (c.gamma, c.gae_lambda, c.clip_range, c.vf_coef, c.ent_coef, c.kl_coef,
            c.max_grad_norm) == (0.99, 0.95, 0.2, 0.5, 0.01, 0.02, 1.0)
    assert (c.temperature_start, c.temperature_end, c.total_epochs) == (1.0, 0.3, 1500)
    assert c.value_head_hidden == 256 and c.pag_backend == "llguidance"
    assert not c.expert_seeding
    assert c.leader_learning_rate < c.follower_learning_rate  # two timescales, leader slower
    assert c.scenario_config().cell.ue_counts == (3, 4, 5)


def test_temperature_decays_linearly_over_the_run():
    c = StackelbergPPOConfig(total_epochs=11, temperature_start=1.0, temperature_end=0.5)
    assert [round(c.temperature(e), 10) for e in (0, 5, 10, 20)] == [1.0, 0.75, 0.5, 0.5]


def test_sft_epochs_per_role_default_to_expert_sft_epochs():
    c = StackelbergPPOConfig(expert_sft_epochs=2.0)
    assert (c.sft_epochs("leader"), c.sft_epochs("follower")) == (2.0, 2.0)
    c = StackelbergPPOConfig(expert_sft_epochs=2.0, expert_follower_sft_epochs=0.25)
    assert (c.sft_epochs("leader"), c.sft_epochs("follower")) == (2.0, 0.25)


@pytest.mark.parametrize("kwargs, message", [
    ({"gamma": 1.5}, "StackelbergPPOConfig.gamma = 1.5 is invalid; allowed: a number in [0.0"),
    ({"clip_range": 0.0}, "StackelbergPPOConfig.clip_range = 0.0"),
    ({"n_envs": 0}, "StackelbergPPOConfig.n_envs = 0 is invalid; allowed: an integer >= 1"),
    ({"n_envs": 3, "episodes_per_epoch": 8}, "a multiple of n_envs (3)"),
    ({"pag_backend": "xgrammar"}, "pag_backend = 'xgrammar'"),
    ({"mixed_precision": "fp8"}, "mixed_precision = 'fp8'"),
    ({"leader_learning_rate": -1e-5}, "leader_learning_rate = -1e-05"),
    ({"history_ttis": -1}, "history_ttis = -1"),
    ({"push_to_hub": True}, "hub_model_id = None"),
    ({"scenario": {"cell": {"tbler": 1.0}}}, "CellConfig.tbler = 1.0"),
    ({"scenario": {"cells": {}}}, "ScenarioConfig.cells"),
    ({"scenario": "{not json"}, "StackelbergPPOConfig.scenario = '{not json'"),
    ({"expert_leader": "random"}, "expert_leader = 'random'"),
    ({"resume_from_checkpoint": 3}, "resume_from_checkpoint = 3 is invalid; allowed: true"),
    ({"resume_from_checkpoint": True, "overwrite_output_dir": True},
     "overwrite_output_dir = True is invalid; allowed: False when resume_from_checkpoint"),
    ({"expert_follower_sft_epochs": 0.0}, "expert_follower_sft_epochs = 0.0"),
    ({"expert_agreement_episodes": -1}, "expert_agreement_episodes = -1"),
    ({"group_by_prefix": "yes"}, "group_by_prefix = 'yes' is invalid; allowed: True or False"),
])
def test_invalid_values_name_the_field(kwargs, message):
    with pytest.raises(ConfigError) as error:
        StackelbergPPOConfig(**kwargs)
    assert message in str(error.value)


def test_trl_parser_reads_cli_and_yaml(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("model_name_or_path: some/model\nn_envs: 4\nepisodes_per_epoch: 8\n"
                      "scenario:\n  cell:\n    n_rbgs: 2\n    ue_counts: [2, 3]\n"
                      "load_in_4bit: true\n")
    parser = TrlParser((StackelbergPPOConfig, ModelConfig))
    args, model = parser.parse_args_and_config(["--config", str(config), "--gamma", "0.9"])
    assert (args.n_envs, args.episodes_per_epoch, args.gamma) == (4, 8, 0.9)
    assert args.scenario_config().cell.ue_counts == (2, 3)
    assert model.model_name_or_path == "some/model" and model.load_in_4bit


@pytest.mark.parametrize("argv, yaml_line, expected", [
    ([], "resume_from_checkpoint: true\n", True),
    (["--resume_from_checkpoint", "true"], "", True),
    (["--resume_from_checkpoint", "runs/a/checkpoint-10"], "", "runs/a/checkpoint-10"),
    ([], "", None)])
def test_trl_parser_reads_resume_from_checkpoint(tmp_path, argv, yaml_line, expected):
    config = tmp_path / "run.yaml"
    config.write_text("n_envs: 4\n" + yaml_line)
    parser = TrlParser((StackelbergPPOConfig, ModelConfig))
    args, _ = parser.parse_args_and_config(["--config", str(config), *argv])
    assert args.resume_from_checkpoint == expected and args.overwrite_output_dir is False
