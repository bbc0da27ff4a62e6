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
