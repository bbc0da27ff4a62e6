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
