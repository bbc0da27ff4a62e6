"""The library internals the code relies on, each named: when an upgrade breaks one, this file
says which, and pyproject.toml's upper bound (transformers < 6, outlines < 2) says which versions
were tested. Public APIs are covered by the behaviour tests; these are the private ones."""

import inspect
import re
from importlib.metadata import version
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def bounds(package: str) -> tuple[str, str | None]:
    """pyproject.toml's (lower, upper) bound of ``package``."""
    text = (ROOT / "pyproject.toml").read_text()
    spec = re.search(rf'"{package}>=([^",]+)(?:,<([^"]+))?"', text)
    assert spec, f"{package} has no lower bound in pyproject.toml"
    return spec.group(1), spec.group(2)


@pytest.mark.parametrize("package", ["transformers", "outlines"])
def test_installed_version_is_inside_the_tested_bounds(package):
    lower, upper = bounds(package)
    assert upper, f"{package} relies on internals: pyproject.toml needs an upper bound"
    major = int(version(package).split(".")[0])
    assert tuple(map(int, lower.split(".")[:2])) <= tuple(map(int, version(package).split(".")[:2]))
    assert major < int(upper), f"{package} {version(package)}: past the tested bound <{upper}"


def test_transformers_dynamic_layer_is_what_the_prefix_layer_subclasses():
    """trainers.policy.prefix_cache._PrefixLayer subclasses DynamicLayer: it sets keys, values
    and is_initialized itself and overrides update(key_states, value_states, ...) and
    get_seq_length; Cache(layers=[...]) holds such layers."""
    from transformers.cache_utils import Cache, DynamicLayer

    assert vars(DynamicLayer()) == {"keys": None, "values": None, "is_initialized": False}
    assert list(inspect.signature(DynamicLayer.update).parameters)[:3] == [
        "self", "key_states", "value_states"]
    assert callable(DynamicLayer.get_seq_length)
    assert "layers" in inspect.signature(Cache.__init__).parameters


def test_transformers_checkpointing_layers_drop_the_cache_unless_told():
    """keep_cache_under_checkpointing sets the private _can_checkpoint_with_cache per layer (the
    class default False makes a checkpointed layer drop the cache)."""
    from transformers.modeling_layers import GradientCheckpointingLayer

    assert GradientCheckpointingLayer._can_checkpoint_with_cache is False


def test_outlines_backends_expose_the_tokenizer_and_vocabulary_the_pag_backends_read():
    """trainers.pag.backends.base reads LLGuidanceBackend(model).llg_tokenizer and
    OutlinesCoreBackend(model).vocabulary (built from the tokenizer alone)."""
    from outlines.backends.llguidance import LLGuidanceBackend
    from outlines.backends.outlines_core import OutlinesCoreBackend

    for backend, attribute in ((LLGuidanceBackend, "llg_tokenizer"),
                               (OutlinesCoreBackend, "vocabulary")):
        assert attribute in inspect.getsource(backend.__init__), (backend, attribute)
