"""The Hugging Face Hub side of a trained policy (design §6, Hub bullet).

A pushed repository holds exactly what is needed to play the game again: the two PEFT adapters
(``leader/`` = base station, ``follower/`` = every UE), the value heads of both roles and a model
card (``huggingface_hub.ModelCard``: base model, model-index of the final evaluation, training
config, citation). :func:`download` gives back a directory with that layout from a local path
or a repo id.

The Hub token is passed straight to ``huggingface_hub`` and used there only for the
``Authorization`` header: it is never logged, never written to a file, and errors raised while
talking to the Hub are re-raised as :class:`HubError` with the token scrubbed from the message
(and the original exception, whose request carries the header, dropped).
"""

from __future__ import annotations

import json
import logging
import math
import numbers
import re
from collections.abc import Callable, Mapping
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from huggingface_hub import EvalResult, HfApi, ModelCard, ModelCardData, snapshot_download

from grammars import ROLES
from textgame.metrics import Summary
from textgame.tables import kpi_table
from trainers.policy.play_config import PLAY_CONFIG, TRAINER_CONFIG

if TYPE_CHECKING:  # the trainer's config is only written here; playing needs PlayConfig
    from trainers.stackelberg.config import StackelbergPPOConfig

logger = logging.getLogger(__name__)

ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")
VALUE_HEADS = "value_heads.safetensors"
VALUE_HEADS_CONFIG = "value_heads.json"
MODEL_CARD = "README.md"
TAGS = ("agentic-mac", "reinforcement-learning", "wireless", "mac-protocol", "stackelberg", "ppo",
        "lora", "arxiv:2510.10895")
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
    """README.md of a pushed policy (:func:`build_model_card`'s text)."""
    return str(build_model_card(base_model=base_model, config=config, kpis=kpis,
                                repo_id=repo_id, license=license))


def build_model_card(*, base_model: str, config: StackelbergPPOConfig,
                     kpis: Mapping[str, Mapping[str, Any]] | None = None, repo_id: str,
                     license: str = "apache-2.0") -> ModelCard:
    """``ModelCard.from_template`` of :data:`CARD_TEMPLATE`: ``ModelCardData`` front matter
    (base model, library peft, tags; a model-index of the final evaluation), the adapters and
    the layers they sit on (``trainable_layers``), usage, KPIs, training config, citation.

    ``kpis`` maps a policy/scenario label to ``{kpi_name: value}`` where a value is a number,
    a ``(mean, ci95)`` pair or a :class:`~textgame.metrics.Summary`. Its first row is the pushed
    policy's own final evaluation, the model-index results; the other rows (baselines) are
    shown in the KPI table only.
    """
    name = repo_id.split("/")[-1]
    data = ModelCardData(base_model=base_model, library_name="peft", license=license,
                         pipeline_tag="text-generation", tags=list(TAGS), model_name=name,
                         eval_results=eval_results(kpis, config) or None)
    # TRL's way (trl/templates/lm_model_card.md): the library's own template, not the Hub's
    # questionnaire, whose every unanswered field reads "[More Information Needed]".
    return ModelCard.from_template(
        data, template_str=CARD_TEMPLATE, model_name=name,
        description=_DESCRIPTION.format(base_model=base_model),
        layers=_layers_sentence(config.trainable_layers),
        usage=_USAGE.format(base_model=base_model, repo_id=repo_id),
        evaluation=kpi_table(kpis) if kpis else "", config_yaml=_config_yaml(config),
        citation_bibtex=CITATION)


def eval_results(kpis: Mapping[str, Mapping[str, Any]] | None,
                 config: StackelbergPPOConfig) -> list[EvalResult]:
    """The model-index entries of the first row of ``kpis`` (the policy's final evaluation on
    its training cell), one per finite KPI; [] without an evaluation."""
    if not kpis:
        return []
    row = next(iter(kpis.values()))
    cell = config.scenario_config().cell
    scenario = (f"uplink OFDMA cell, I in {list(cell.ue_counts)}, N = {cell.n_rbgs}, "
                f"T = {cell.episode_ttis}")
    results = []
    for kpi, value in row.items():
        mean, ci95 = _mean_and_ci(value)
        if mean is None:
            continue
        results.append(EvalResult(
            task_type="reinforcement-learning", task_name=TASK_NAME,
            dataset_type="agentic-mac-textgame", dataset_name=scenario, metric_type=kpi,
            metric_value=mean,
            metric_name=kpi if ci95 is None else f"{kpi} (± {ci95:.2g}, 95 % CI)"))
    return results


def _mean_and_ci(value: Any) -> tuple[float | None, float | None]:
    """(mean, ci95 or None) of a KPI value; (None, None) for text or an undefined mean."""
    if isinstance(value, Summary):
        value = (value.mean, value.ci95)
    mean, ci95 = value if isinstance(value, (tuple, list)) and len(value) == 2 else (value,
                                                                                      None)
    if not _finite(mean):
        return None, None
    return float(mean), float(ci95) if _finite(ci95) else None


def _finite(value: Any) -> bool:
    return (isinstance(value, numbers.Real) and not isinstance(value, bool)
            and math.isfinite(value))


def _layers_sentence(k: int) -> str:
    if not k:
        return "The adapters sit on every decoder layer (`trainable_layers: 0`)."
    return (f"The adapters sit on the top {k} decoder layers only (`trainable_layers: {k}`, "
            "PEFT `layers_to_transform`); the layers below are the base model's own.")


TASK_NAME = "Uplink MAC protocol (multi-follower Stackelberg game)"
CITATION = """\
@article{agentic_mac_2025,
  title   = {LLM-Empowered Agentic MAC Protocols: A Dynamic Stackelberg Game Approach},
  author  = {Tan, Renxuan and Li, Rongpeng and Wang, Fei and Peng, Chenghui and Wu, Shaoyun and
             Zhao, Zhifeng and Zhang, Honggang},
  journal = {arXiv preprint arXiv:2510.10895},
  year    = {2025},
  url     = {https://arxiv.org/abs/2510.10895}
}"""  # the paper (arXiv 2510.10895), as in README.md's Citation
CARD_TEMPLATE = """\
---
{{ card_data }}
---

# {{ model_name }}

{{ description }}

{{ layers }}

## Usage

{{ usage }}

{% if evaluation %}## Evaluation

{{ evaluation }}
{% endif %}## Training configuration

`StackelbergPPOConfig` of the run:

```yaml
{{ config_yaml }}```

## Citation

The paper this implements ([arXiv 2510.10895](https://arxiv.org/abs/2510.10895)):

```bibtex
{{ citation_bibtex }}
```

"""  # Jinja drops a template's last newline: the card ends with one

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
    """Save the training config beside a policy, and its play config, which evaluation, the
    scheduler API and the teachers play it with (:meth:`PlayConfig.read`)."""
    text = json.dumps(_plain_config(config), indent=2) + "\n"
    (Path(folder) / TRAINER_CONFIG).write_text(text, encoding="utf-8")
    config.play_config().save(folder)


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
    card = build_model_card(base_model=base_model, config=config, kpis=kpis, repo_id=repo_id)
    if token and token in str(card):
        raise ValueError("the model card would contain the Hub token; refusing to write it")
    card.save(folder / MODEL_CARD)
    api = HfApi(endpoint=endpoint)
    logger.info("Pushing %s to %s (private=%s)", folder, repo_id, private)
    _scrubbed(token, api.create_repo, repo_id, private=private, exist_ok=True, token=token)
    commit = _scrubbed(token, api.upload_folder, repo_id=repo_id, folder_path=folder, token=token,
                       allow_patterns=[*policy_files(), MODEL_CARD, TRAINER_CONFIG, PLAY_CONFIG],
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
                         allow_patterns=[*policy_files(), MODEL_CARD, TRAINER_CONFIG, PLAY_CONFIG])
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
