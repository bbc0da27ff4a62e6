"""Imports show the layers (STYLE.md): what importing a layer loads, and the PAG backend factory.

Each import check runs in a fresh interpreter, so ``sys.modules`` holds only what that import
pulled in.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from trainers.pag.backends import BACKENDS, get_backend
from trainers.pag.backends.base import GrammarBackend, GrammarProgram, GrammarState
from trainers.policy.play_config import PAG_BACKENDS

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "transformers", "outlines", "outlines_core", "llguidance", "trl", "peft")


def loaded_after(code: str) -> set[str]:
    """The top-level packages (and trainers.* modules) in sys.modules after running ``code``."""
    probe = (f"import sys\n{code}\nimport json\n"
             "print(json.dumps(sorted(m for m in sys.modules if '.' not in m "
             "or m.startswith('trainers.'))))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         cwd=ROOT, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stderr[-3000:]
    return set(json.loads(out.stdout.splitlines()[-1]))


def test_textgame_loads_no_torch():
    code = ("import importlib, pkgutil, textgame\n"
            "for m in pkgutil.walk_packages(textgame.__path__, 'textgame.'):\n"
            "    importlib.import_module(m.name)")
    assert loaded_after(code) & set(HEAVY) == set()


def test_marl_baselines_load_no_language_model_stack():
    loaded = loaded_after("import trainers.marl, trainers.marl.trainer")
    assert "torch" in loaded  # the baselines are torch networks
    assert loaded & {"transformers", "outlines", "outlines_core", "llguidance", "trl",
                     "peft"} == set()
    assert not any(m.startswith(("trainers.pag", "trainers.policy")) for m in loaded)


def test_ppo_maths_needs_no_grammar_or_policy():
    loaded = loaded_after("import trainers.ppo")
    assert loaded & set(HEAVY) == {"torch"}
    assert not any(m.startswith(("trainers.pag", "trainers.policy")) for m in loaded)


def test_pag_imports_no_policy_and_compiles_nothing_at_import():
    loaded = loaded_after("import trainers.pag.sampler, trainers.pag.backends")
    assert loaded & set(HEAVY) == {"torch"}  # llguidance, outlines: on the first compile
    assert not any(m.startswith(("trainers.policy", "trainers.stackelberg")) for m in loaded)


def test_factory_refuses_an_unknown_backend_naming_value_and_allowed_names():
    message = "backend = 'xgrammar' is invalid; allowed: one of ['llguidance', 'regex', 'none']"
    with pytest.raises(ValueError) as error:
        get_backend("xgrammar")
    assert str(error.value) == message


@pytest.mark.parametrize("name", ["llguidance", "regex", "none"])
def test_every_backend_implements_the_one_interface(name):
    backend = get_backend(name)
    assert isinstance(backend, GrammarBackend) and backend.name == name
    assert issubclass(type(backend), GrammarBackend)


def test_the_interface_is_abstract():
    for base in (GrammarBackend, GrammarProgram, GrammarState):
        with pytest.raises(TypeError, match="abstract"):
            base()


def test_the_config_offers_exactly_the_factorys_backends():
    assert PAG_BACKENDS == tuple(BACKENDS)
