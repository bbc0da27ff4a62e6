"""The Hugging Face Hub side of a trained policy (design §6, Hub bullet).

A pushed repository holds exactly what is needed to play the game again: the two PEFT adapters
(``leader/`` = base station, ``follower/`` = every UE), the value heads of both roles and a model
card (base model, training config, evaluation KPIs). :func:`download` gives back a directory with
that layout from a local path or a repo id.

The Hub token is passed straight to ``huggingface_hub`` and used there only for the
``Authorization`` header: it is never logged, never written to a file, and errors raised while
talking to the Hub are re-raised as :class:`HubError` with the token scrubbed from the message
(and the original exception, whose request carries the header, dropped).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

import yaml
from huggingface_hub import HfApi, ModelCardData, snapshot_download

from grammars import ROLES
from textgame.tables import kpi_table
from trainers.stackelberg.config import StackelbergPPOConfig

logger = logging.getLogger(__name__)

ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")
VALUE_HEADS = "value_heads.safetensors"
VALUE_HEADS_CONFIG = "value_heads.json"
MODEL_CARD = "README.md"
TRAINER_CONFIG = "trainer_config.json"  # the StackelbergPPOConfig a policy was trained with
TAGS = ("agentic-mac", "reinforcement-learning", "wireless", "mac-protocol", "stackelberg", "ppo",
        "lora")
DEFAULT_COMMIT_MESSAGE = "Upload Stackelberg PPO adapters, value heads and model card"
# Config fields that could ever hold a credential are left out of the card whatever they contain.
_SECRET_FIELD = re.compile(r"token|secret|password|api_key|credential", re.IGNORECASE)


class HubError(RuntimeError):
    """A Hub request failed. The message never contains the token."""

    def __init__(self, message: str, status_code: int | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code


def policy_files() -> list[str]:
    """Paths, relative to a policy directory, that a push uploads and a download needs."""
    adapters = [f"{role}/{name}" for role in ROLES for name in ADAPTER_FILES]
    return [*adapters, VALUE_HEADS, VALUE_HEADS_CONFIG]


def check_layout(folder: str | Path) -> Path:
    """Return ``folder`` as a Path once every file of :func:`policy_files` is in it."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"policy directory {folder} does not exist or is not a directory")
    missing = [str(folder / name) for name in policy_files() if not (folder / name).is_file()]
    if missing:
        raise ValueError(f"policy directory {folder} is incomplete; missing: {', '.join(missing)}")
    return folder


# ----------------------------------------------------------------------------- model card
def model_card(*, base_model: str, config: StackelbergPPOConfig,
               kpis: Mapping[str, Mapping[str, Any]] | None = None, repo_id: str,
               license: str = "apache-2.0") -> str:
    """README.md of a pushed policy: front matter, adapters, usage, KPIs, training config.

    ``kpis`` maps a policy/scenario label to ``{kpi_name: value}`` where a value is a number or
    a ``(mean, ci95)`` pair.
    """
    front_matter = ModelCardData(base_model=base_model, library_name="peft", license=license,
                                 pipeline_tag="text-generation", tags=list(TAGS)).to_yaml()
    sections = [
        f"---\n{front_matter}\n---",
        f"# {repo_id.split('/')[-1]}",
        _DESCRIPTION.format(base_model=base_model) + "\n\n" + _layers_sentence(
            config.trainable_layers),
        "## Usage\n\n" + _USAGE.format(base_model=base_model, repo_id=repo_id),
    ]
    if kpis:
        sections.append("## Evaluation\n\n" + kpi_table(kpis))
    sections.append("## Training configuration\n\n`StackelbergPPOConfig` of the run:\n\n"
                    f"```yaml\n{_config_yaml(config)}```")
    return "\n\n".join(sections) + "\n"


def _layers_sentence(k: int) -> str:
    if not k:
        return "The adapters sit on every decoder layer (`trainable_layers: 0`)."
    return (f"The adapters sit on the top {k} decoder layers only (`trainable_layers: {k}`, "
            "PEFT `layers_to_transform`); the layers below are the base model's own.")


_DESCRIPTION = """\
An uplink MAC protocol played by a language model: the uplink of one OFDMA cell as a
multi-follower Stackelberg game between the base station (leader) and its UEs (followers),
learned with multi-turn PPO under a protocol action grammar (agentic-mac). Both roles are LoRA
adapters of `{base_model}` on the same base weights:

- `leader/` — the base station: broadcasts the downlink control message (DCM), which UE should
  use each resource block group (RBG).
- `follower/` — every UE (one adapter shared by all): reads its DCM and its own state and answers
  with a transmission bitmap and an uplink control message (UCM).
- `value_heads.safetensors` — the PPO value heads of both roles (3-layer ReLU MLPs on the hidden
  state of the last prompt token, fp32); `value_heads.json` describes them.

The reference policy of the KL penalty is the base model with the adapters disabled."""

_USAGE = """\
With agentic-mac (a repo id or a local directory):

```python
from trainers.runs.hub import download
from trainers.policy.models import StackelbergPolicy

path = download("{repo_id}")  # the adapters, value heads and this card
policy = StackelbergPolicy.from_pretrained("{base_model}", path)
```

As a scheduler in the simulator (textgame ``LeaderPolicy``/``FollowerPolicy`` objects):

```python
from textgame.config import ScenarioConfig
from textgame.runner import run_episodes
from trainers.policy.scheduler import load_llm_policies

leader, follower = load_llm_policies("{repo_id}")  # the base station and every UE
kpis = run_episodes(ScenarioConfig(), leader, follower, episodes=8, n_envs=8)
print(kpis["throughput_mbps"].mean(), kpis["fairness"].mean())
```

or from the shell: `agentic-mac simulate --leader llm:{repo_id} --followers llm:{repo_id} --ues 5`.

With PEFT alone (adapters only, no value heads):

```python
from peft import PeftModel
from transformers import AutoModelForCausalLM

base = AutoModelForCausalLM.from_pretrained("{base_model}")
model = PeftModel.from_pretrained(base, "{repo_id}", subfolder="leader", adapter_name="leader")
model.load_adapter("{repo_id}", subfolder="follower", adapter_name="follower")
model.set_adapter("leader")  # the base station; "follower" for a UE
```"""


def _plain_config(config: StackelbergPPOConfig) -> dict[str, Any]:
    # A JSON round trip turns tuples, Paths and numpy scalars into plain JSON/YAML values.
    fields = {name: value for name, value in asdict(config).items()
              if not _SECRET_FIELD.search(name)}
    return json.loads(json.dumps(fields, default=str))


def _config_yaml(config: StackelbergPPOConfig) -> str:
    return yaml.safe_dump(_plain_config(config), sort_keys=False, allow_unicode=True)


def write_trainer_config(folder: str | Path, config: StackelbergPPOConfig) -> None:
    """Save the training config beside a policy: evaluation replays its text layer and UEs."""
    text = json.dumps(_plain_config(config), indent=2) + "\n"
    (Path(folder) / TRAINER_CONFIG).write_text(text, encoding="utf-8")


def read_trainer_config(folder: str | Path) -> dict[str, Any] | None:
    """The config :func:`write_trainer_config` saved in ``folder``, or None (older policies)."""
    path = Path(folder) / TRAINER_CONFIG
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


# ------------------------------------------------------------------------------ transfer
def push_to_hub(folder: str | Path, repo_id: str, *, base_model: str,
                config: StackelbergPPOConfig, kpis: Mapping[str, Mapping[str, Any]] | None = None,
                token: str | None = None, private: bool = True,
                commit_message: str = DEFAULT_COMMIT_MESSAGE, endpoint: str | None = None) -> str:
    """Write the model card into ``folder`` and upload the policy files; return the commit URL.

    ``folder`` holds ``leader/`` and ``follower/`` (PEFT adapter dirs), ``value_heads.safetensors``
    and ``value_heads.json``; nothing else in it is uploaded. ``token=None`` uses the token
    ``huggingface_hub`` finds (``HF_TOKEN`` or ``hf auth login``).
    """
    folder = check_layout(folder)
    card = model_card(base_model=base_model, config=config, kpis=kpis, repo_id=repo_id)
    if token and token in card:
        raise ValueError("the model card would contain the Hub token; refusing to write it")
    (folder / MODEL_CARD).write_text(card, encoding="utf-8")
    api = HfApi(endpoint=endpoint)
    logger.info("Pushing %s to %s (private=%s)", folder, repo_id, private)
    _scrubbed(token, api.create_repo, repo_id, private=private, exist_ok=True, token=token)
    commit = _scrubbed(token, api.upload_folder, repo_id=repo_id, folder_path=folder, token=token,
                       allow_patterns=[*policy_files(), MODEL_CARD, TRAINER_CONFIG],
                       commit_message=commit_message)
    logger.info("Pushed %s", commit.commit_url)
    return commit.commit_url


def download(repo_id_or_path: str | Path, *, revision: str | None = None,
             token: str | None = None, cache_dir: str | Path | None = None,
             endpoint: str | None = None) -> Path:
    """A policy directory (see :func:`check_layout`) from a local path or a Hub repo id."""
    path = Path(repo_id_or_path).expanduser()
    if path.is_dir():
        return check_layout(path)
    text = str(repo_id_or_path)
    if path.exists() or text.startswith(("/", ".", "~")) or text.count("/") != 1:
        raise ValueError(f"{text!r} is neither a policy directory nor a Hub repo id "
                         "('namespace/name')")
    snapshot = _scrubbed(token, snapshot_download, text, revision=revision, token=token,
                         cache_dir=cache_dir, endpoint=endpoint,
                         allow_patterns=[*policy_files(), MODEL_CARD, TRAINER_CONFIG])
    return check_layout(snapshot)


def _scrubbed(token: str | None, call: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
    """``call(*args, **kwargs)``; any error is re-raised as HubError with the token scrubbed.

    The original exception is neither chained nor kept as context: its response holds the
    request, and with it the Authorization header.
    """
    try:
        return call(*args, **kwargs)
    except Exception as error:  # every failure of the Hub client lands here
        message = f"{type(error).__name__}: {error}"
        status_code = getattr(getattr(error, "response", None), "status_code", None)
    if token:
        message = message.replace(token, "***")
    raise HubError(message, status_code=status_code)
