"""The batched multi-turn text game (design §4, eq. 11) over :class:`StackelbergGame`.

Per TTI: ``reset(seed)`` or the previous step gives B leader prompts; ``step_leader(texts)`` reads
B DCM texts and gives one follower prompt per active UE, flattened in (env, slot) order
(``follower_slots``); ``step_followers(texts)`` reads those action texts, executes the TTI and
returns rewards, ``done``, the next leader prompts and diagnostics.

In lenient mode (``TextConfig.strict = False``) an unparsable text becomes the no-op (DCM all 0;
silence with UCM 0), is flagged in ``info`` and counted in the invalid-action KPI; the episode
goes on. In strict mode it raises :class:`ParseError` naming the env (and slot) and the game
does not advance. A prompt is ``render(system, user)`` with system = the meta-prompt and user =
the observation text; pass a tokenizer's chat template as ``render`` to use one.

History (``history_ttis = k > 0``) is kept as rendered lines: per env the last k DCMs and outcomes,
per UE slot its last k actions and feedback. Leader lines name UEs by their rank at that TTI, so
under churn an old line may use another numbering; a UE slot that joins or leaves starts afresh.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from textgame.config import ScenarioConfig
from textgame.game import FollowerObs, GameStep, LeaderObs, StackelbergGame
from textgame.metrics import EpisodeKPIs
from textgame.parsing import ParseError, format_dcm, format_follower, read_dcm, read_follower
from textgame.prompts import PromptBuilder, PromptHistory, TextConfig

Render = Callable[[str, str], str]


@dataclass
class TextStep:
    """The result of one TTI of the text game."""

    leader_rewards: np.ndarray  # (B,) F_b,t, eq. 5
    follower_rewards: np.ndarray  # (F,) F_i,t, eq. 2, aligned with follower_slots
    done: bool
    leader_prompts: list[str] | None  # next TTI's; None when done
    info: dict  # invalid_leader (B,), invalid_followers (F,), game_step, at the end kpis


class TextStackelbergEnv:
    """B lock-step text games: ``reset`` -> (``step_leader`` -> ``step_followers``) x T."""

    def __init__(self, scenario: ScenarioConfig | None = None, n_envs: int = 1,
                 config: TextConfig | None = None, render: Render | None = None) -> None:
        self.game = StackelbergGame(scenario, n_envs)
        self.scenario = self.game.scenario
        self.config = config or TextConfig()
        self.n_envs, self.n_rbgs = n_envs, self.game.n_rbgs
        self.max_ues, self.ucm_levels = self.game.max_ues, self.game.ucm_levels
        self.builder = PromptBuilder(self.config, self.n_rbgs, self.ucm_levels, render)
        self.kpis = EpisodeKPIs(self.scenario.cell, n_envs)
        self.follower_slots: list[tuple[int, int]] = []
        self._phase = "reset"
        self._clear_history()
        self._prompts: list[str] = []
        self._follower_obs: FollowerObs | None = None

    # ------------------------------------------------------------------------------ helpers
    def _expect(self, phase: str) -> None:
        if self._phase != phase:
            raise RuntimeError(f"the text env expects {self._phase!r} next, not {phase!r}")

    @staticmethod
    def _check_count(method: str, texts: Sequence[str], expected: int, of: str) -> None:
        if isinstance(texts, str) or len(texts) != expected:
            got = "a single str" if isinstance(texts, str) else f"{len(texts)} texts"
            raise ValueError(f"{method} expects {expected} texts ({of}), got {got}")

    def _clear_history(self) -> None:
        self.history = PromptHistory(self.config.history_ttis, self.n_envs, self.max_ues)

    @property
    def pending_prompts(self) -> list[str]:
        """The prompts awaiting answers (leader or follower); empty before reset and at the end."""
        return list(self._prompts)

    @property
    def follower_obs(self) -> FollowerObs:
        """The numeric observation behind the pending follower prompts (numeric policies act on it).

        Set by :meth:`step_leader` of this process; :meth:`load_state_dict` does not restore it.
        """
        self._expect("followers")
        if self._follower_obs is None:
            raise RuntimeError("follower_obs is set by step_leader; load_state_dict does not "
                               "restore it")
        return self._follower_obs

    def _leader_prompts(self, obs: LeaderObs) -> list[str]:
        prompts = [self.builder.leader(obs, b, self.history.leader(b))
                   for b in range(self.n_envs)]
        self._prompts = prompts
        return list(prompts)

    # --------------------------------------------------------------------------------- API
    def reset(self, seed: int | np.random.SeedSequence | None = None) -> list[str]:
        """Start B episodes; returns the B leader prompts of TTI 0."""
        obs = self.game.reset(seed)
        self.kpis.reset()
        self._clear_history()
        self.follower_slots = []
        self._phase = "leader"
        self._leader_obs = obs
        return self._leader_prompts(obs)

    def step_leader(self, texts: Sequence[str]) -> list[str]:
        """Read B DCM texts; returns a follower prompt per active UE in ``follower_slots`` order."""
        self._expect("leader")
        self._check_count("step_leader", texts, self.n_envs, "one DCM per env")
        dcm = np.zeros((self.n_envs, self.n_rbgs), dtype=np.int64)  # (B, N)
        invalid = np.zeros(self.n_envs, dtype=bool)  # (B,)
        for b, text in enumerate(texts):
            try:
                dcm[b], invalid[b] = read_dcm(text, self.n_rbgs, int(self._leader_obs.n_active[b]),
                                              strict=self.config.strict)
            except ParseError as err:
                raise ParseError(f"leader of env {b}: {err}") from err
        obs = self.game.step_leader(dcm)
        self._invalid_leader, self._follower_obs = invalid, obs
        self.follower_slots = [(int(b), int(i)) for b, i in np.argwhere(obs.active)]
        prompts = [self.builder.follower(obs, b, i, self.history.follower(b, i))
                   for b, i in self.follower_slots]
        self._phase = "followers"
        self._prompts = prompts
        return list(prompts)

    def step_followers(self, texts: Sequence[str]) -> TextStep:
        """Read one action text per entry of ``follower_slots`` and execute the TTI."""
        self._expect("followers")
        self._check_count("step_followers", texts, len(self.follower_slots),
                          "one action per active UE, in follower_slots order")
        shape = (self.n_envs, self.max_ues)
        bitmap = np.zeros(shape + (self.n_rbgs,), dtype=bool)  # (B, I_max, N)
        ucm = np.zeros(shape, dtype=np.int64)  # (B, I_max)
        invalid = np.zeros(shape, dtype=bool)  # (B, I_max)
        for (b, i), text in zip(self.follower_slots, texts, strict=True):
            try:
                bitmap[b, i], ucm[b, i], invalid[b, i] = read_follower(
                    text, self.n_rbgs, self.ucm_levels, strict=self.config.strict)
            except ParseError as err:
                raise ParseError(f"follower of env {b}, slot {i}: {err}") from err
        step = self.game.step_followers(bitmap, ucm, invalid_leader=self._invalid_leader,
                                        invalid_followers=invalid)
        self.kpis.update(step)
        self._record_history(step)
        rows, cols = np.array(self.follower_slots, dtype=np.int64).reshape(-1, 2).T
        info = {"invalid_leader": step.invalid_leader.copy(),
                "invalid_followers": invalid[rows, cols], "game_step": step}
        if step.done:
            info["kpis"] = self.kpis.result()
            self._phase, self._prompts, prompts = "reset", [], None
        else:
            self._phase, self._leader_obs = "leader", step.leader_obs
            prompts = self._leader_prompts(step.leader_obs)
        return TextStep(leader_rewards=step.leader_reward,
                        follower_rewards=step.follower_reward[rows, cols], done=step.done,
                        leader_prompts=prompts, info=info)

    def _record_history(self, step: GameStep) -> None:
        t, report = step.report.t, step.report
        self.history.add_leader(t, step.dcm, report.rbg_outcome)
        self.history.add_follower(t, self.follower_slots, step.intended, step.bitmap, step.ucm,
                                  report.feedback)
        if step.leader_obs is not None:  # churn: a UE slot that left or joined starts afresh
            self.history.forget(~step.leader_obs.active | report.joined)

    # ------------------------------------------------------------------------ action texts
    def leader_texts(self, dcm: np.ndarray) -> list[str]:
        """Numeric DCMs (B, N) -> the B texts :meth:`step_leader` reads (e.g. expert data)."""
        return [format_dcm(row) for row in np.asarray(dcm)]

    def follower_texts(self, bitmap: np.ndarray, ucm: np.ndarray) -> list[str]:
        """Numeric actions (B, I_max, N), (B, I_max) -> texts in ``follower_slots`` order."""
        return [format_follower(np.asarray(bitmap[b, i]), int(ucm[b, i]))
                for b, i in self.follower_slots]

    # ------------------------------------------------------------------------------ snapshots
    def state_dict(self) -> dict:
        """Everything needed to continue exactly: game, KPI accumulator, history, pending turn."""
        state = {"phase": self._phase, "game": self.game.state_dict(),
                 "kpis": self.kpis.state_dict(),
                 "prompts": list(self._prompts), "follower_slots": list(self.follower_slots),
                 **self.history.state_dict()}
        if self._phase == "followers":
            state["invalid_leader"] = self._invalid_leader.copy()
        return state

    def load_state_dict(self, state: dict) -> None:
        """Restore a :meth:`state_dict` into an env built with the same scenario, B and config."""
        self.game.load_state_dict(state["game"])
        self.kpis.load_state_dict(state["kpis"])
        self._phase, self._follower_obs = state["phase"], None
        self._prompts = list(state["prompts"])
        self.follower_slots = [(int(b), int(i)) for b, i in state["follower_slots"]]
        self.history.load_state_dict(state)
        if self._phase == "leader":
            self._leader_obs = self.game.leader_obs()
        if self._phase == "followers":
            self._invalid_leader = np.array(state["invalid_leader"], copy=True)
