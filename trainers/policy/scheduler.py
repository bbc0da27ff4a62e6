"""A trained LLM policy as a scheduler: textgame ``LeaderPolicy``/``FollowerPolicy`` objects.

    from trainers.policy.scheduler import load_llm_policies
    leader, follower = load_llm_policies("runs/tiny-cpu/final")       # or a Hub repo id
    result = run_episodes(scenario, leader, follower, episodes=16, n_envs=8)

:class:`LLMLeader` and :class:`LLMFollower` turn the numeric observations of
:class:`textgame.game.StackelbergGame` into the prompts the adapters were trained on (the text
layer of design §4 with the run's k-TTI history, and the chat template if training used one),
decode one PAG-constrained action per env (leader) or per active UE (followers) in one batched
call, and parse it back (lenient: an unparsable text is the no-op and is counted in
``invalid``). So an adapter plugs into ``run_episodes``, the PettingZoo environment, the
student's DAgger rollout and ``agentic-mac simulate --leader llm:DIR``.

History lines are those of :class:`textgame.text_env.TextStackelbergEnv`: the leader's hold the
DCM that was executed (its own, or the one :meth:`LLMLeader.executed` names); a UE's hold its
executed action, read back from its next observation.
"""

from __future__ import annotations

import dataclasses
import functools
import json

import numpy as np
import torch

from textgame.config import ConfigError
from textgame.game import FollowerObs, LeaderObs
from textgame.parsing import read_dcm, read_follower
from textgame.policies import FollowerPolicy, LeaderPolicy, make_follower
from textgame.prompts import PromptBuilder, PromptHistory
from textgame.simulator import IDLE
from trainers.policy.chat import chat_render
from trainers.policy.decide import Decider
from trainers.policy.encoding import load_tokenizer
from trainers.policy.play_config import PlayConfig


@functools.lru_cache(maxsize=4)
def load_llm(path_or_repo_id: str, base_model: str | None = None, device: str | None = None):
    """``(policy, tokenizer, PlayConfig)`` of saved adapters, loaded once per process.

    The base model is the one the adapters name unless ``base_model`` is given; the play config
    is the one saved beside them (:meth:`PlayConfig.read`), its k the adapters' own."""
    from trainers.policy.models import StackelbergPolicy
    from trainers.runs.hub import download

    folder = download(path_or_repo_id)
    adapter = json.loads((folder / "leader" / "adapter_config.json").read_text())
    base = base_model or adapter.get("base_model_name_or_path")
    if not base:
        raise ConfigError(f"{path_or_repo_id}: the adapters do not name their base model; "
                          "pass base_model")
    play = PlayConfig.read(folder)
    policy = StackelbergPolicy.from_pretrained(base, folder).eval()
    if device:
        policy.to(device)
    if play.trainable_layers != policy.trainable_layers:
        play = dataclasses.replace(play, trainable_layers=policy.trainable_layers)
    return policy, load_tokenizer(base), play


class _LLMRole:
    """What both roles share: prompts, grammars, one batched constrained decision."""

    role = ""

    def __init__(self, path_or_repo_id: str, *, base_model: str | None = None,
                 device: str | None = None, temperature: float | None = None,
                 ucm_levels: int | None = None) -> None:
        self.policy, self.tokenizer, self.config = load_llm(path_or_repo_id, base_model, device)
        self.text = self.config.text_config()  # history_ttis k, as in training
        if ucm_levels is None:  # K: the leader's prompt states it; followers get it in reset
            ucm_levels = self.config.scenario_config().cell.ucm_levels
        self.ucm_levels = ucm_levels
        self.temperature = self.config.temperature if temperature is None else temperature
        self.render = chat_render(self.tokenizer) if self.config.use_chat_template else None
        self.decider = Decider(self.policy, self.tokenizer, pag_backend=self.config.pag_backend)
        self.encoder = self.decider.encoder
        self.invalid = 0  # unparsable actions so far (none under PAG)
        self.generator: torch.Generator | None = None

    def _reset(self, n_rbgs: int, ucm_levels: int, rng: np.random.Generator) -> None:
        self.builder = PromptBuilder(self.text, n_rbgs, ucm_levels, self.render)
        self.n_rbgs, self.ucm_levels = n_rbgs, ucm_levels
        seed = int(rng.integers(2**63 - 1))
        self.generator = torch.Generator(self.policy.device).manual_seed(seed)

    def _decide(self, prompts: list[str], n_ues: list[int]) -> list[str]:
        with torch.no_grad():
            return self.decider.decide(self.role, prompts, n_ues, self.builder,
                                       generator=self.generator,
                                       temperature=self.temperature).sample.texts


class LLMLeader(_LLMRole, LeaderPolicy):
    """The ``leader`` adapter as a base station: (B, N) DCMs, one batched call per TTI."""

    role = "leader"
    name = "llm_leader"

    def reset(self, n_envs: int, max_ues: int, n_rbgs: int, rng: np.random.Generator) -> None:
        super().reset(n_envs, max_ues, n_rbgs, rng)
        self._reset(n_rbgs, self.ucm_levels, rng)
        self.history = PromptHistory(self.text.history_ttis, n_envs, max_ues)
        self.sent: np.ndarray | None = None  # (B, N) the DCM executed last TTI

    def executed(self, dcm: np.ndarray, active: np.ndarray) -> None:
        """The DCM (B, N) that was executed in place of this leader's (a DAgger mixture)."""
        self.sent = np.array(dcm, dtype=np.int64)

    def _remember(self, obs: LeaderObs) -> None:
        """Last TTI's line per env, as ``TextStackelbergEnv`` records it."""
        if self.sent is not None:
            self.history.add_leader(obs.t - 1, self.sent, obs.rbg_outcome)

    def act(self, obs: LeaderObs) -> np.ndarray:
        self._remember(obs)
        envs = range(obs.active.shape[0])
        n_ues = [int(obs.n_active[b]) for b in envs]
        texts = self._decide([self.builder.leader(obs, b, self.history.leader(b)) for b in envs],
                             n_ues)
        dcm = np.zeros((len(n_ues), self.n_rbgs), dtype=np.int64)  # (B, N)
        for b, text in enumerate(texts):
            dcm[b], bad = read_dcm(text, self.n_rbgs, n_ues[b])
            self.invalid += int(bad)
        self.sent = dcm.copy()
        return dcm


class LLMFollower(_LLMRole, FollowerPolicy):
    """The ``follower`` adapter as every UE: one batched call for all active UEs of all envs."""

    role = "follower"
    name = "llm_follower"

    def reset(self, n_envs: int, max_ues: int, n_rbgs: int, ucm_levels: int,
              rng: np.random.Generator) -> None:
        super().reset(n_envs, max_ues, n_rbgs, ucm_levels, rng)
        self._reset(n_rbgs, ucm_levels, rng)
        self.history = PromptHistory(self.text.history_ttis, n_envs, max_ues)
        self.last: FollowerObs | None = None

    def _remember(self, obs: FollowerObs) -> None:
        """Last TTI's line per UE, as ``TextStackelbergEnv`` records it, from ``obs`` alone.

        The executed bitmap is where the feedback is not idle, the executed UCM is
        ``last_ucm``; a slot that left or joined (churn only joins empty slots) starts afresh.
        """
        last, self.last = self.last, obs
        if last is None:
            return
        stayed = last.active & obs.active  # (B, I_max)
        sent = obs.feedback != IDLE  # (B, I_max, N): a transmission never comes back idle
        self.history.forget(~stayed)
        self.history.add_follower(last.t, [tuple(s) for s in np.argwhere(stayed)], last.dcm_bits,
                                  sent, obs.last_ucm, obs.feedback)

    def act(self, obs: FollowerObs) -> tuple[np.ndarray, np.ndarray]:
        self._remember(obs)
        b_max, i_max = obs.active.shape
        bitmap = np.zeros((b_max, i_max, self.n_rbgs), dtype=bool)  # (B, I_max, N)
        ucm = np.zeros((b_max, i_max), dtype=np.int64)  # (B, I_max)
        slots = [(int(b), int(i)) for b, i in np.argwhere(obs.active)]
        if not slots:
            return bitmap, ucm
        n_active = obs.active.sum(axis=1)
        texts = self._decide([self.builder.follower(obs, b, i, self.history.follower(b, i))
                              for b, i in slots], [int(n_active[b]) for b, _ in slots])
        for (b, i), text in zip(slots, texts, strict=True):
            bitmap[b, i], ucm[b, i], bad = read_follower(text, self.n_rbgs, self.ucm_levels)
            self.invalid += int(bad)
        return bitmap, ucm


def load_llm_policies(path_or_repo_id: str, *, base_model: str | None = None,
                      device: str | None = None, ucm_levels: int | None = None,
                      temperature: float | None = None, ues_as_trained: bool = False,
                      ) -> tuple[LLMLeader, FollowerPolicy]:
    """The two roles of saved adapters (a run's ``final/`` or a Hub repo id) as textgame
    policies.

    ``ucm_levels``: the cell's K (the leader's prompt states it; default the training cell's);
    ``temperature``: default the run's final one; ``ues_as_trained``: the UEs of a run trained
    with a heuristic follower (the Dictator ablation) are that heuristic, not the untrained
    follower adapter.
    """
    kwargs = {"base_model": base_model, "device": device, "ucm_levels": ucm_levels,
              "temperature": temperature}
    leader = LLMLeader(path_or_repo_id, **kwargs)
    ues = leader.config.follower_policy
    if ues_as_trained and ues != "llm":
        return leader, make_follower(ues)
    return leader, LLMFollower(path_or_repo_id, **kwargs)
