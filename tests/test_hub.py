"""Hub push and download (design §6, Hub bullet), against a fake Hub at the HTTP boundary.

``huggingface_hub`` sends every request through one shared ``httpx2.Client`` built by the factory
set with ``set_client_factory``; the fixture installs a client whose ``MockTransport`` answers like
the Hub API and records each request. ``HfApi`` itself runs unpatched, and a request to any URL
the fake does not know fails the test, so nothing can reach the network.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import logging
import re
import traceback
from dataclasses import asdict
from pathlib import Path

import pytest
import torch
import yaml
from huggingface_hub import EvalResult, ModelCard
from huggingface_hub import constants as hf_constants
from huggingface_hub.utils import set_client_factory
from huggingface_hub.utils._http import default_client_factory, hf_request_event_hook
from safetensors.torch import save_file

try:  # huggingface_hub 2.x talks through httpx2, 1.x through httpx (same API)
    import httpx2
except ImportError:  # pragma: no cover
    import httpx as httpx2

from trainers.runs.hub import (
    CITATION,
    MODEL_CARD,
    HubError,
    download,
    model_card,
    policy_files,
    push_to_hub,
)
from trainers.stackelberg.config import StackelbergPPOConfig

ROOT = Path(__file__).resolve().parents[1]
ENDPOINT = "http://hub.test"
REPO_ID = "mac-lab/agentic-mac-tiny"
TOKEN = "hf_FakeTokenThatMustNeverLeak0123456789"
BASE_MODEL = "meta-llama/Llama-3.2-1B"
SHA = "0123456789abcdef0123456789abcdef01234567"
KPIS = {"LLM leader (I=4)": {"throughput_mbps": (12.345, 0.21), "jfi": 0.93, "collisions": 3},
        "Max-Weight": {"throughput_mbps": 11.0}}
UPLOADED = sorted([*policy_files(), MODEL_CARD])


class FakeHub:
    """Answers huggingface_hub's requests like the Hub API for one model repo; records them."""

    def __init__(self) -> None:
        self.requests: list[httpx2.Request] = []
        self.unexpected: list[str] = []
        self.files: dict[str, bytes] = {}  # the repo's content after the last commit
        self.created: list[dict] = []
        self.fail: tuple[str, int] | None = None  # (path suffix, status): answer it with an error

    def __call__(self, request: httpx2.Request) -> httpx2.Response:
        path, method = request.url.path, request.method
        if (method, path) == ("GET", "/api/agent-harnesses"):
            # huggingface_hub fetches this registry once per process for its User-Agent, from the
            # endpoint fixed at import; after an error it uses an empty one and caches nothing.
            return httpx2.Response(404)
        if request.url.host != "hub.test":
            return self._unexpected(request)
        self.requests.append(request)
        if self.fail and path.endswith(self.fail[0]):
            # A careless server that echoes the Authorization header back in its error message.
            echo = f"rejected credentials {request.headers.get('authorization')}"
            return httpx2.Response(self.fail[1], json={"error": echo})
        repo = f"/api/models/{REPO_ID}"
        if (method, path) == ("POST", "/api/repos/create"):
            self.created.append(json.loads(request.content))
            return httpx2.Response(200, json={"url": f"{ENDPOINT}/{REPO_ID}", "name": REPO_ID})
        if (method, path) == ("POST", "/api/validate-yaml"):
            return httpx2.Response(200, json={"errors": [], "warnings": []})
        if (method, path) == ("POST", f"{repo}/preupload/main"):
            files = json.loads(request.content)["files"]
            return httpx2.Response(200, json={"files": [
                {"path": f["path"], "uploadMode": "regular", "shouldIgnore": False}
                for f in files]})
        if (method, path) == ("POST", f"{repo}/commit/main"):
            for line in commit_lines(request)[1:]:
                assert line["key"] == "file" and line["value"]["encoding"] == "base64"
                self.files[line["value"]["path"]] = base64.b64decode(line["value"]["content"])
            return httpx2.Response(200, json={"commitUrl": f"{ENDPOINT}/{REPO_ID}/commit/{SHA}",
                                              "commitOid": SHA})
        if (method, path) == ("GET", f"{repo}/revision/main"):
            return httpx2.Response(200, json={
                "id": REPO_ID, "sha": SHA, "private": True,
                "siblings": [{"rfilename": name} for name in self.files]})
        if method == "GET" and path.startswith(f"{repo}/tree/{SHA}"):
            return httpx2.Response(200, json=[
                {"type": "file", "path": name, "size": len(data), "oid": git_oid(data)}
                for name, data in self.files.items()])
        resolve = f"/{REPO_ID}/resolve/{SHA}/"
        if method in ("HEAD", "GET") and path.startswith(resolve):
            data = self.files.get(path.removeprefix(resolve))
            if data is None:
                return httpx2.Response(404, headers={"X-Error-Code": "EntryNotFound"})
            headers = {"X-Repo-Commit": SHA, "ETag": f'"{git_oid(data)}"',
                       "Content-Length": str(len(data))}
            return httpx2.Response(200, headers=headers, content=data if method == "GET" else b"")
        return self._unexpected(request)

    def _unexpected(self, request: httpx2.Request) -> httpx2.Response:
        self.requests.append(request)
        self.unexpected.append(f"{request.method} {request.url}")
        return httpx2.Response(418, json={"error": "not a Hub route the fake knows"})

    def calls(self) -> list[str]:
        return [f"{r.method} {r.url.path}" for r in self.requests]


def commit_lines(request: httpx2.Request) -> list[dict]:
    return [json.loads(line) for line in request.content.decode().splitlines() if line]


def git_oid(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@pytest.fixture
def hub(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("HF_ENDPOINT", ENDPOINT)
    # Read once when huggingface_hub is imported; the offline test suite may have set it there.
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)
    fake = FakeHub()
    set_client_factory(lambda: httpx2.Client(
        transport=httpx2.MockTransport(fake), event_hooks={"request": [hf_request_event_hook]},
        follow_redirects=True))
    yield fake
    set_client_factory(default_client_factory)
    assert fake.unexpected == []


@pytest.fixture
def policy_dir(tmp_path) -> Path:
    """A trained policy as the trainer saves it, plus files that must not be uploaded."""
    folder = tmp_path / "final"
    generator = torch.Generator().manual_seed(0)
    for role in ("leader", "follower"):
        (folder / role).mkdir(parents=True)
        config = {"peft_type": "LORA", "base_model_name_or_path": BASE_MODEL, "r": 2,
                  "lora_alpha": 4, "target_modules": ["q_proj", "v_proj"], "task_type": "CAUSAL_LM"}
        (folder / role / "adapter_config.json").write_text(json.dumps(config))
        save_file({"lora_A.weight": torch.randn(2, 8, generator=generator),
                   "lora_B.weight": torch.randn(8, 2, generator=generator)},
                  folder / role / "adapter_model.safetensors")
        (folder / role / "README.md").write_text("PEFT's own card: not uploaded\n")
    save_file({f"{role}.{i}.weight": torch.randn(4, 4, generator=generator)
               for role in ("leader", "follower") for i in range(3)},
              folder / "value_heads.safetensors")
    (folder / "value_heads.json").write_text(json.dumps({"hidden_size": 4, "hidden": 4}))
    (folder / "optimizer.pt").write_bytes(b"optimizer state: not uploaded")
    return folder


@pytest.fixture
def config() -> StackelbergPPOConfig:
    return StackelbergPPOConfig(push_to_hub=True, hub_model_id=REPO_ID, seed=7)


def push(folder: Path, config: StackelbergPPOConfig, **kwargs) -> str:
    return push_to_hub(folder, REPO_ID, base_model=BASE_MODEL, config=config, kpis=KPIS,
                       token=TOKEN, endpoint=ENDPOINT, **kwargs)


def front_matter(card: str) -> dict:
    match = re.match(r"---\n(.*?)\n---\n", card, flags=re.S)
    assert match, "the card starts with a YAML front matter block"
    return yaml.safe_load(match.group(1))


# --------------------------------------------------------------------------------- model card
def test_model_card_front_matter_names_base_model_library_and_tags(config):
    card = model_card(base_model=BASE_MODEL, config=config, kpis=None, repo_id=REPO_ID)
    meta = front_matter(card)
    assert meta["base_model"] == BASE_MODEL
    assert meta["library_name"] == "peft"
    assert meta["license"] == "apache-2.0"
    assert set(meta["tags"]) >= {"agentic-mac", "reinforcement-learning", "wireless",
                                 "mac-protocol", "stackelberg", "ppo", "lora"}


def test_model_card_holds_every_config_field(config):
    card = model_card(base_model=BASE_MODEL, config=config, kpis=None, repo_id=REPO_ID)
    block = re.search(r"```yaml\n(.*?)```", card, flags=re.S).group(1)
    assert yaml.safe_load(block) == asdict(config)


@pytest.mark.parametrize("k", [0, 4])
def test_model_card_says_which_layers_the_adapters_sit_on(config, k):
    config = dataclasses.replace(config, trainable_layers=k)
    card = model_card(base_model=BASE_MODEL, config=config, kpis=None, repo_id=REPO_ID)
    assert (f"`trainable_layers: {k}`" in card) and (("top 4 decoder layers" in card) == bool(k))
    block = re.search(r"```yaml\n(.*?)```", card, flags=re.S).group(1)
    assert yaml.safe_load(block)["trainable_layers"] == k


def test_model_card_tells_how_to_load_both_adapters(config):
    card = model_card(base_model=BASE_MODEL, config=config, kpis=None, repo_id=REPO_ID)
    assert "from trainers.policy.models import StackelbergPolicy" in card
    assert f'download("{REPO_ID}")' in card
    assert 'subfolder="leader"' in card and 'subfolder="follower"' in card


def test_model_card_kpi_table_shows_mean_and_ci95(config):
    card = model_card(base_model=BASE_MODEL, config=config, kpis=KPIS, repo_id=REPO_ID)
    assert "| policy | throughput_mbps | jfi | collisions |" in card
    assert "| LLM leader (I=4) | 12.35 ± 0.21 | 0.93 | 3 |" in card
    assert "| Max-Weight | 11 | – | – |" in card


def test_model_card_without_kpis_has_no_evaluation_section(config):
    card = model_card(base_model=BASE_MODEL, config=config, kpis=None, repo_id=REPO_ID)
    assert "## Evaluation" not in card


def written_card(folder: Path, config: StackelbergPPOConfig, kpis) -> ModelCard:
    """The card of ``model_card`` written into ``folder`` and read back by huggingface_hub."""
    ModelCard(model_card(base_model=BASE_MODEL, config=config, kpis=kpis,
                         repo_id=REPO_ID)).save(folder / MODEL_CARD)
    return ModelCard.load(folder / MODEL_CARD)


def test_model_card_metadata_reads_back_with_huggingface_hub(config, tmp_path):
    card = written_card(tmp_path, config, KPIS)
    assert card.data.base_model == BASE_MODEL and card.data.library_name == "peft"
    assert card.data.model_name == "agentic-mac-tiny"
    assert "arxiv:2510.10895" in card.data.tags


def test_model_index_holds_the_final_evaluation_of_the_pushed_policy_only(config, tmp_path):
    card = written_card(tmp_path, config, KPIS)
    cell = "uplink OFDMA cell, I in [3, 4, 5], N = 4, T = 50"  # the design's training cell
    common = dict(task_type="reinforcement-learning", dataset_type="agentic-mac-textgame",
                  dataset_name=cell,
                  task_name="Uplink MAC protocol (multi-follower Stackelberg game)")
    assert card.data.eval_results == [  # KPIS' first row; Max-Weight is only in the table
        EvalResult(metric_type="throughput_mbps", metric_value=12.345,
                   metric_name="throughput_mbps (± 0.21, 95 % CI)", **common),
        EvalResult(metric_type="jfi", metric_value=0.93, metric_name="jfi", **common),
        EvalResult(metric_type="collisions", metric_value=3.0, metric_name="collisions",
                   **common)]


def test_model_index_skips_undefined_and_text_values(config, tmp_path):
    kpis = {"LLM": {"fairness": float("nan"), "note": "greedy", "throughput_mbps": 2.5}}
    card = written_card(tmp_path, config, kpis)
    assert [(r.metric_type, r.metric_value) for r in card.data.eval_results] == [
        ("throughput_mbps", 2.5)]


def test_model_card_without_an_evaluation_has_no_model_index(config, tmp_path):
    card = written_card(tmp_path, config, None)
    assert card.data.eval_results is None and "model-index" not in str(card)
    assert card.data.base_model == BASE_MODEL


def test_model_card_cites_the_paper_as_the_readme_does(config):
    card = model_card(base_model=BASE_MODEL, config=config, kpis=None, repo_id=REPO_ID)
    readme = (ROOT / "README.md").read_text()
    assert f"```bibtex\n{CITATION}\n```" in card
    assert f"```bibtex\n{CITATION}\n```" in readme
    assert "LLM-Empowered Agentic MAC Protocols: A Dynamic Stackelberg Game Approach" in CITATION
    assert "arXiv:2510.10895" in CITATION


def test_model_card_is_built_offline(config, monkeypatch):
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    card = model_card(base_model=BASE_MODEL, config=config, kpis=KPIS, repo_id=REPO_ID)
    assert card.startswith("---\n") and card.endswith("```\n")


# ----------------------------------------------------------------------------------- push
def test_push_creates_a_private_repo_then_commits(hub, policy_dir, config):
    url = push(policy_dir, config)
    assert url == f"{ENDPOINT}/{REPO_ID}/commit/{SHA}"
    assert hub.created == [{"name": "agentic-mac-tiny", "organization": "mac-lab",
                            "visibility": "private"}]
    assert hub.calls() == ["POST /api/repos/create", "POST /api/validate-yaml",
                           f"POST /api/models/{REPO_ID}/preupload/main",
                           f"POST /api/models/{REPO_ID}/commit/main"]


def test_push_uploads_exactly_the_policy_files_and_card(hub, policy_dir, config):
    push(policy_dir, config)
    assert sorted(hub.files) == UPLOADED
    for name, data in hub.files.items():
        assert data == (policy_dir / name).read_bytes(), name


def test_pushed_card_names_base_model_and_shows_kpis(hub, policy_dir, config):
    push(policy_dir, config)
    card = hub.files[MODEL_CARD].decode()
    assert front_matter(card)["base_model"] == BASE_MODEL
    assert "| LLM leader (I=4) | 12.35 ± 0.21 | 0.93 | 3 |" in card
    assert f"hub_model_id: {REPO_ID}" in card
    written = ModelCard.load(policy_dir / MODEL_CARD)  # the uploaded file
    assert str(written) == card
    assert [r.metric_value for r in written.data.eval_results] == [12.345, 0.93, 3.0]


def test_token_is_sent_only_in_the_authorization_header(hub, policy_dir, config):
    push(policy_dir, config)
    for request in hub.requests:
        assert request.headers["authorization"] == f"Bearer {TOKEN}"
        others = {k: v for k, v in request.headers.items() if k.lower() != "authorization"}
        assert TOKEN not in str(request.url) + json.dumps(others)
        assert TOKEN.encode() not in request.content


def test_token_is_in_no_file_and_no_output(hub, policy_dir, config, capsys, caplog):
    caplog.set_level(logging.DEBUG)
    push(policy_dir, config)
    assert all(TOKEN.encode() not in data for data in hub.files.values())
    assert all(TOKEN.encode() not in p.read_bytes() for p in policy_dir.rglob("*") if p.is_file())
    out, err = capsys.readouterr()
    assert TOKEN not in out + err
    assert caplog.records and all(TOKEN not in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(("route", "status"), [("/api/repos/create", 500),
                                               ("/preupload/main", 403),
                                               ("/commit/main", 401)])
def test_hub_errors_never_show_the_token(hub, policy_dir, config, capsys, caplog, route, status):
    caplog.set_level(logging.DEBUG)
    hub.fail = (route, status)
    with pytest.raises(HubError) as info:
        push(policy_dir, config)
    shown = "".join(traceback.format_exception(info.value))
    assert TOKEN not in shown and "***" in shown
    assert info.value.status_code == status
    assert info.value.__cause__ is None and info.value.__context__ is None
    out, err = capsys.readouterr()
    assert TOKEN not in out + err
    assert all(TOKEN not in r.getMessage() for r in caplog.records)


def test_push_names_the_missing_adapter_dir(hub, policy_dir, config):
    for path in (policy_dir / "follower").iterdir():
        path.unlink()
    (policy_dir / "follower").rmdir()
    with pytest.raises(ValueError, match=re.escape(str(policy_dir / "follower" /
                                                       "adapter_config.json"))):
        push(policy_dir, config)
    assert hub.requests == []


def test_push_names_missing_value_heads(hub, policy_dir, config):
    (policy_dir / "value_heads.safetensors").unlink()
    with pytest.raises(ValueError, match=re.escape(str(policy_dir / "value_heads.safetensors"))):
        push(policy_dir, config)
    assert hub.requests == []


# ------------------------------------------------------------------------------- download
def test_download_returns_a_local_policy_dir_as_is(hub, policy_dir):
    assert download(policy_dir) == policy_dir
    assert download(str(policy_dir)) == policy_dir
    assert hub.requests == []


def test_download_rejects_an_incomplete_local_dir(hub, policy_dir):
    (policy_dir / "leader" / "adapter_model.safetensors").unlink()
    with pytest.raises(ValueError, match=re.escape(str(policy_dir / "leader"))):
        download(policy_dir)


def test_download_rejects_a_path_that_does_not_exist(hub, tmp_path):
    with pytest.raises(ValueError, match="neither a policy directory nor a Hub repo id"):
        download(tmp_path / "no-such-run")
    assert hub.requests == []


def test_download_of_a_repo_id_gets_back_what_was_pushed(hub, policy_dir, config, tmp_path):
    push(policy_dir, config)
    hub.requests.clear()
    local = download(REPO_ID, token=TOKEN, endpoint=ENDPOINT, cache_dir=tmp_path / "cache")
    assert f"GET /api/models/{REPO_ID}/revision/main" in hub.calls()
    got = sorted(p.relative_to(local).as_posix() for p in local.rglob("*") if p.is_file())
    assert got == UPLOADED
    for name in policy_files():
        assert (local / name).read_bytes() == (policy_dir / name).read_bytes(), name
