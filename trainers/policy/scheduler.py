"""A trained LLM policy as a scheduler: textgame ``LeaderPolicy``/``FollowerPolicy`` objects.

    from trainers.policy.scheduler import load_llm_policies
    leader, follower = load_llm_policies("runs/tiny-cpu/final")       # or a Hub repo id
    result = run_episodes(scenario, leader, follower, episodes=16, n_envs=8)

:class:`LLMLeader` and :class:`LLMFollower` turn the numeric observations of
:class:`textgame.game.StackelbergGame` into the prompts the adapters were trained on (the text
layer of design §4, with the chat template if training used one), decode one PAG-constrained
action per env (leader) or per active UE (followers) in one batched call, and parse it back
(lenient: an unparsable text is the no-op and is counted in ``invalid``). So an adapter plugs into
``run_episodes``, the PettingZoo environment and ``agentic-mac simulate --leader llm:DIR``.
"""

from __future__ import annotations

import functools
import json

import numpy as np
import torch

from textgame.config import ConfigError
from textgame.game import FollowerObs, LeaderObs
from textgame.parsing import read_dcm, read_follower
from textgame.policies import FollowerPolicy, LeaderPolicy
from textgame.prompts import PromptBuilder, TextConfig
from trainers.pag.sampler import compile_action_grammar
from trainers.policy.chat import chat_render
from trainers.policy.encoding import PromptEncoder, load_tokenizer, meta_prompt_lines


@functools.lru_cache(maxsize=4)
def load_llm(path_or_repo_id: str, base_model: str | None = None, device: str | None = None):
    """``(policy, tokenizer, training config dict)`` of saved adapters, loaded once per process.

    The base model is the one the adapters name unless ``base_model`` is given."""
    from trainers.policy.models import StackelbergPolicy
    from trainers.runs.hub import download, read_trainer_config

    folder = download(path_or_repo_id)
    adapter = json.loads((folder / "leader" / "adapter_config.json").read_text())
    base = base_model or adapter.get("base_model_name_or_path")
    if not base:
        raise ConfigError(f"{path_or_repo_id}: the adapters do not name their base model; "
                          "pass base_model")
    policy = StackelbergPolicy.from_pretrained(base, folder).eval()
    if device:
        policy.to(device)
    return policy, load_tokenizer(base), read_trainer_config(folder) or {}


class _LLMRole:
    """What both roles share: prompts, grammars, one batched constrained decision."""

    role = ""

    def __init__(self, path_or_repo_id: str, *, base_model: str | None = None,
                 device: str | None = None, temperature: float | None = None,
                 ucm_levels: int = 4) -> None:
        self.ucm_levels = ucm_levels  # K; the leader's prompt states it, followers get it in reset
        self.policy, self.tokenizer, trained = load_llm(path_or_repo_id, base_model, device)
        history = int(trained.get("history_ttis", 0))
        if history:
            raise ConfigError(f"{path_or_repo_id}: history_ttis = {history} is not supported "
                              "by the scheduler wrappers; allowed: adapters trained with 0")
        self.backend = trained.get("pag_backend", "llguidance")
        self.temperature = temperature if temperature is not None else float(
            trained.get("temperature_end", 0.3))
        self.render = chat_render(self.tokenizer) if trained.get("use_chat_template", True) \
            else None
        self.encoder = PromptEncoder(self.tokenizer)
        self.invalid = 0  # unparsable actions so far (none under PAG)
        self.generator: torch.Generator | None = None

    def _reset(self, n_rbgs: int, ucm_levels: int, rng: np.random.Generator) -> None:
        self.builder = PromptBuilder(TextConfig(), n_rbgs, ucm_levels, self.render)
        self.n_rbgs, self.ucm_levels = n_rbgs, ucm_levels
        seed = int(rng.integers(2**63 - 1))
        self.generator = torch.Generator(self.policy.device).manual_seed(seed)
        self._prefix = meta_prompt_lines(self.builder.render,
                                         getattr(self.builder, f"{self.role}_template"))

    def _decide(self, prompts: list[str], n_ues: list[int]) -> list[str]:
        grammars = [compile_action_grammar(self.tokenizer, self.role, n, self.n_rbgs,
                                           self.ucm_levels, self.backend, self.policy.vocab_size)
                    for n in n_ues]
        input_ids, attention_mask = self.encoder(prompts, self.policy.device)
        with torch.no_grad():
            sample, _ = self.policy.generate_actions(
                self.role, input_ids, attention_mask, grammars, generator=self.generator,
                temperature=self.temperature,
                prefix_lengths=self.encoder.prefix_lengths(prompts, self._prefix))
        return sample.texts


class LLMLeader(_LLMRole, LeaderPolicy):
    """The ``leader`` adapter as a base station: (B, N) DCMs, one batched call per TTI."""

    role = "leader"

    def reset(self, n_envs: int, max_ues: int, n_rbgs: int, rng: np.random.Generator) -> None:
        self._reset(n_rbgs, self.ucm_levels, rng)

    def act(self, obs: LeaderObs) -> np.ndarray:
        envs = range(obs.active.shape[0])
        n_ues = [int(obs.n_active[b]) for b in envs]
        texts = self._decide([self.builder.leader(obs, b) for b in envs], n_ues)
        dcm = np.zeros((len(n_ues), self.n_rbgs), dtype=np.int64)  # (B, N)
        for b, text in enumerate(texts):
            dcm[b], bad = read_dcm(text, self.n_rbgs, n_ues[b])
            self.invalid += int(bad)
        return dcm


class LLMFollower(_LLMRole, FollowerPolicy):
    """The ``follower`` adapter as every UE: one batched call for all active UEs of all envs."""

    role = "follower"

    def reset(self, n_envs: int, max_ues: int, n_rbgs: int, ucm_levels: int,
              rng: np.random.Generator) -> None:
        self._reset(n_rbgs, ucm_levels, rng)

    def act(self, obs: FollowerObs) -> tuple[np.ndarray, np.ndarray]:
        b_max, i_max = obs.active.shape
        bitmap = np.zeros((b_max, i_max, self.n_rbgs), dtype=bool)  # (B, I_max, N)
        ucm = np.zeros((b_max, i_max), dtype=np.int64)  # (B, I_max)
        slots = [(int(b), int(i)) for b, i in np.argwhere(obs.active)]
        if not slots:
            return bitmap, ucm
        n_active = obs.active.sum(axis=1)
        texts = self._decide([self.builder.follower(obs, b, i) for b, i in slots],
                             [int(n_active[b]) for b, _ in slots])
        for (b, i), text in zip(slots, texts, strict=True):
            bitmap[b, i], ucm[b, i], bad = read_follower(text, self.n_rbgs, self.ucm_levels)
            self.invalid += int(bad)
        return bitmap, ucm


def load_llm_policies(path_or_repo_id: str, *, base_model: str | None = None,
                      device: str | None = None, ucm_levels: int = 4,
                      ) -> tuple[LLMLeader, LLMFollower]:
    """The two roles of saved adapters (a run's ``final/`` or a Hub repo id) as textgame
    policies; ``ucm_levels`` is the cell's K (the leader's prompt states it)."""
    kwargs = {"base_model": base_model, "device": device, "ucm_levels": ucm_levels}
    return LLMLeader(path_or_repo_id, **kwargs), LLMFollower(path_or_repo_id, **kwargs)
