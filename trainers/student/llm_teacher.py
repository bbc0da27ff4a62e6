"""A trained LLM policy (Stackelberg PPO adapters) as textgame leader and follower policies.

The prompts, grammars and parsing are the text game's (:class:`textgame.prompts.PromptBuilder`,
:func:`trainers.pag.compile_action_grammar`, lenient :mod:`textgame.parsing`), so the teacher
sees what it saw in training, including its k-TTI history. The leader's history holds the DCM
that was *executed* (``executed``, told by the DAgger rollout); a follower's holds its own
proposed action. ``greedy`` samples at the run's final temperature (PAG sampling has no
temperature 0); otherwise at 1.0. UEs of a run trained with a heuristic follower
(the Dictator ablation) are played by that heuristic.
"""

from __future__ import annotations

import numpy as np
import torch

from textgame.parsing import read_dcm, read_follower
from textgame.policies import FollowerPolicy, LeaderPolicy, make_follower
from textgame.prompts import PromptBuilder, follower_history_line, leader_history_line


class LLMRuntime:
    """The loaded policy, tokenizer, prompt builder and grammars of one adapter directory."""

    def __init__(self, path: str, base_model: str | None, device: str | None) -> None:
        from trainers.policy.chat import chat_render
        from trainers.policy.encoding import PromptEncoder
        from trainers.policy.scheduler import load_llm
        from trainers.stackelberg.config import StackelbergPPOConfig

        self.policy, self.tokenizer, trained = load_llm(path, base_model, device)
        keep = ("history_ttis", "use_chat_template", "pag_backend", "temperature_end",
                "follower_policy", "scenario")
        self.config = StackelbergPPOConfig(**{k: trained[k] for k in keep if k in trained})
        self.render = chat_render(self.tokenizer) if self.config.use_chat_template else None
        self.encoder = PromptEncoder(self.tokenizer)

    def builder(self, n_rbgs: int, ucm_levels: int) -> PromptBuilder:
        return PromptBuilder(self.config.text_config(), n_rbgs, ucm_levels, self.render)

    def decide(self, role: str, prompts: list[str], n_ues: list[int], n_rbgs: int,
               ucm_levels: int, generator: torch.Generator, temperature: float) -> list[str]:
        from trainers.pag.sampler import compile_action_grammar

        grammars = [compile_action_grammar(self.tokenizer, role, int(n), n_rbgs, ucm_levels,
                                           self.config.pag_backend, self.policy.vocab_size)
                    for n in n_ues]
        input_ids, attention_mask = self.encoder(prompts, self.policy.device)
        with torch.no_grad():
            sample, _ = self.policy.generate_actions(role, input_ids, attention_mask, grammars,
                                                     generator=generator,
                                                     temperature=temperature)
        return sample.texts


def _generator(runtime: LLMRuntime, rng: np.random.Generator) -> torch.Generator:
    return torch.Generator(runtime.policy.device).manual_seed(int(rng.integers(2**62)))


class LLMLeader(LeaderPolicy):
    name = "llm_leader"

    def __init__(self, runtime: LLMRuntime, temperature: float) -> None:
        self.runtime, self.temperature = runtime, temperature

    def reset(self, n_envs, max_ues, n_rbgs, rng) -> None:
        super().reset(n_envs, max_ues, n_rbgs, rng)
        self.ucm_levels = self.runtime.config.scenario_config().cell.ucm_levels
        self.builder = self.runtime.builder(n_rbgs, self.ucm_levels)
        self.generator = _generator(self.runtime, rng)
        self.history: list[list[str]] = [[] for _ in range(n_envs)]
        self.sent: np.ndarray | None = None

    def executed(self, dcm: np.ndarray, active: np.ndarray) -> None:
        self.sent = dcm.copy()

    def act(self, obs) -> np.ndarray:
        k = self.runtime.config.history_ttis
        if k and self.sent is not None:
            for b, lines in enumerate(self.history):
                lines.append(leader_history_line(obs.t - 1, self.sent[b], obs.rbg_outcome[b]))
                del lines[:-k]
        prompts = [self.builder.leader(obs, b, self.history[b]) for b in range(self.n_envs)]
        texts = self.runtime.decide("leader", prompts, list(obs.n_active), self.n_rbgs,
                                    self.ucm_levels, self.generator, self.temperature)
        dcm = np.stack([read_dcm(text, self.n_rbgs, int(n))[0]
                        for text, n in zip(texts, obs.n_active, strict=True)])
        self.sent = dcm
        return dcm.astype(np.int64)


class LLMFollower(FollowerPolicy):
    name = "llm_follower"

    def __init__(self, runtime: LLMRuntime, temperature: float) -> None:
        self.runtime, self.temperature = runtime, temperature

    def reset(self, n_envs, max_ues, n_rbgs, ucm_levels, rng) -> None:
        super().reset(n_envs, max_ues, n_rbgs, ucm_levels, rng)
        self.builder = self.runtime.builder(n_rbgs, ucm_levels)
        self.generator = _generator(self.runtime, rng)
        self.history = [[[] for _ in range(max_ues)] for _ in range(n_envs)]
        self.previous = None  # (dcm bits, bitmap, ucm) of the last TTI

    def _remember(self, obs) -> None:
        k = self.runtime.config.history_ttis
        if not k or self.previous is None:
            return
        bits, bitmap, ucm = self.previous
        for b, i in np.argwhere(obs.active):
            lines = self.history[b][i]
            lines.append(follower_history_line(obs.t - 1, bits[b, i], bitmap[b, i], ucm[b, i],
                                               obs.feedback[b, i]))
            del lines[:-k]

    def act(self, obs) -> tuple[np.ndarray, np.ndarray]:
        self._remember(obs)
        slots = [(int(b), int(i)) for b, i in np.argwhere(obs.active)]
        prompts = [self.builder.follower(obs, b, i, self.history[b][i]) for b, i in slots]
        n_ues = [int(obs.active[b].sum()) for b, _ in slots]
        texts = self.runtime.decide("follower", prompts, n_ues, self.n_rbgs, self.ucm_levels,
                                    self.generator, self.temperature) if slots else []
        bitmap = np.zeros((self.n_envs, self.max_ues, self.n_rbgs), dtype=bool)
        ucm = np.zeros((self.n_envs, self.max_ues), dtype=np.int64)
        for (b, i), text in zip(slots, texts, strict=True):
            bitmap[b, i], ucm[b, i], _ = read_follower(text, self.n_rbgs, self.ucm_levels)
        self.previous = (obs.dcm_bits.copy(), bitmap, ucm)
        return bitmap, ucm


def load_llm_teacher(path: str, greedy: bool, base_model: str | None, device: str | None,
                     bad):
    """The :class:`trainers.student.teachers.Teacher` of an adapter directory or Hub id."""
    from trainers.student.teachers import Teacher

    try:
        runtime = LLMRuntime(path, base_model, device)
    except (OSError, ValueError) as error:
        raise bad(f"llm:{path}", f"'llm:DIR_OR_REPO' naming Stackelberg PPO adapters ({error})"
                  ) from None
    c = runtime.config
    temperature = c.temperature_end if greedy else 1.0
    leader = LLMLeader(runtime, temperature)
    follower = (LLMFollower(runtime, temperature) if c.follower_policy == "llm"
                else make_follower(c.follower_policy))
    return Teacher(leader, follower, tuple(c.scenario_config().cell.ue_counts))
