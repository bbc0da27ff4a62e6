"""Shared fixtures."""

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
