"""Numeric observation -> text (design §4, eq. 11): the prompts the LLM leader and followers read.

A prompt is a meta-prompt (system: task description and agent identity, from a ``str.format``
template in ``textgame/templates/``) and an observation text (user). Numbers are plain digits,
words are fixed, nothing depends on dict order or floats, so the same observation always gives the
same bytes. Observation texts (``t`` = TTI, outcome words per RBG from :data:`OUTCOME_WORDS`)::

    leader                                        follower
    TTI 7                                         TTI 7
    Last TTI: idle ok collision ok                buffer 3
    UE1: ucm 2 csi good served 5 bsr 3            channel good
    UE2: ucm 0 csi poor served 1 bsr 0            DCM 1010
    [TTI 6: DCM 1 2 1 0 outcome ...]  (history)   Last TTI: ok idle collision idle
    DCM:                                          [TTI 6: DCM 1010 action 1010 2 outcome ...]
                                                  Action:

One line per active UE in rank order, so the leader prompt grows linearly with I_t (the
generalisation mechanism of design §4); a follower text holds only its own UE's state.
"""

from __future__ import annotations

import copy
import os
import string
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

import numpy as np

from textgame.config import CHANNEL_STATES, check_int_at_least, fail_field
from textgame.game import FollowerObs, LeaderObs
from textgame.parsing import format_dcm, format_follower
from textgame.simulator import COLLISION, ERASURE, IDLE, SUCCESS

OUTCOME_WORDS = {IDLE: "idle", SUCCESS: "ok", COLLISION: "collision", ERASURE: "erased"}
LEADER_FIELDS = ("n_rbgs", "n_ues", "max_ucm")
"""Placeholders a leader template may use: RBGs N, active UEs I_t, largest UCM K - 1."""
FOLLOWER_FIELDS = ("n_rbgs", "ue", "max_ucm")
"""Placeholders a follower template may use: RBGs N, the UE's own number (rank), K - 1."""
LEADER_CUE = "DCM:"
FOLLOWER_CUE = "Action:"
PROMPT_FORMATS = (1, 2)
"""1: the follower meta-prompt names the UE ("You are UE3 ..."), one meta-prompt per UE number;
2: it does not, and the observation's first line does ("UE3 TTI 7"), so every UE's prompt
starts with the same meta-prompt (one shared prefix for all followers)."""


def packaged_template(role: str, prompt_format: int = 1) -> str:
    """The meta-prompt template shipped in ``textgame/templates/{role}.txt`` (the follower's
    of prompt format 2: ``follower_v2.txt``)."""
    name = f"{role}_v2" if role == "follower" and prompt_format >= 2 else role
    return (resources.files("textgame") / "templates" / f"{name}.txt").read_text("utf-8")


def _read_template(name: str, path: Any, fields: tuple[str, ...]) -> str:
    allowed = "None or the path of a UTF-8 str.format template using only " + ", ".join(
        "{" + f + "}" for f in fields)
    if not isinstance(path, (str, os.PathLike)):
        fail_field("TextConfig", name, path, allowed)
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
        used = {field for _, field, _, _ in string.Formatter().parse(text) if field is not None}
        if not used <= set(fields):
            raise KeyError(sorted(used - set(fields)))
        text.format(**{f: 1 for f in fields})
    except (OSError, UnicodeDecodeError, KeyError, IndexError, ValueError) as err:
        fail_field("TextConfig", name, path, f"{allowed} ({type(err).__name__}: {err})")
    return text


@dataclass(frozen=True)
class TextConfig:
    """How observations become prompts and how action texts are read."""

    history_ttis: int = 0
    """k: past TTIs shown in every prompt (leader: DCMs and outcomes; UE: its own actions)."""
    strict: bool = False
    """True: unparsable actions raise ParseError; False: they become no-ops, counted invalid."""
    leader_template: str | os.PathLike | None = None
    """Path of a leader meta-prompt template; None = the packaged ``templates/leader.txt``."""
    follower_template: str | os.PathLike | None = None
    """Path of a follower meta-prompt template; None = the packaged ``templates/follower.txt``
    (``follower_v2.txt`` for prompt format 2)."""
    prompt_format: int = 1
    """:data:`PROMPT_FORMATS`: 1 = the UE's number in its meta-prompt, 2 = in its observation."""

    def __post_init__(self) -> None:
        check_int_at_least("TextConfig", "history_ttis", self.history_ttis, 0)
        if self.prompt_format not in PROMPT_FORMATS or isinstance(self.prompt_format, bool):
            fail_field("TextConfig", "prompt_format", self.prompt_format,
                       f"one of {list(PROMPT_FORMATS)}")
        if not isinstance(self.strict, bool):
            fail_field("TextConfig", "strict", self.strict, "True or False")
        self.templates()  # fails early, naming the field, for a missing or malformed template

    def templates(self) -> tuple[str, str]:
        """(leader, follower) meta-prompt templates, trailing newlines removed."""
        leader = (packaged_template("leader") if self.leader_template is None else
                  _read_template("leader_template", self.leader_template, LEADER_FIELDS))
        follower = (packaged_template("follower", self.prompt_format)
                    if self.follower_template is None else
                    _read_template("follower_template", self.follower_template, FOLLOWER_FIELDS))
        return leader.rstrip("\n"), follower.rstrip("\n")


# ------------------------------------------------------------------------------------ pieces
def outcome_text(outcome: Sequence[int]) -> str:
    """Per-RBG outcome codes -> words, e.g. ``"idle ok collision erased"``."""
    return " ".join(OUTCOME_WORDS[int(o)] for o in outcome)


def bits_text(bits: Sequence[bool]) -> str:
    """(N,) bits -> ``"1010"``, RBG1 first."""
    return "".join("1" if b else "0" for b in bits)


def leader_history_line(t: int, dcm: Sequence[int], outcome: Sequence[int]) -> str:
    """One past TTI as the BS saw it: the DCM it sent and what happened on each RBG."""
    return f"TTI {t}: DCM {format_dcm(np.asarray(dcm))} outcome {outcome_text(outcome)}"


def follower_history_line(t: int, dcm_bits: Sequence[bool], bitmap: Sequence[bool], ucm: int,
                          feedback: Sequence[int]) -> str:
    """One past TTI as a UE saw it: its DCM bits, the action executed and its own feedback."""
    action = format_follower(np.asarray(bitmap, dtype=bool), int(ucm))
    return (f"TTI {t}: DCM {bits_text(dcm_bits)} action {action} "
            f"outcome {outcome_text(feedback)}")


class PromptHistory:
    """The last k TTIs as rendered lines (design §4, ``history_ttis = k``): per env for the BS,
    per (env, UE slot) for the UEs. The one home of the history: the text env records it from
    each executed TTI, the LLM schedulers rebuild it from their observations."""

    def __init__(self, k: int, n_envs: int, max_ues: int) -> None:
        self.k = k
        self._leader: list[list[str]] = [[] for _ in range(n_envs)]
        self._follower: list[list[list[str]]] = [[[] for _ in range(max_ues)]
                                                 for _ in range(n_envs)]

    def leader(self, env: int) -> list[str]:
        return self._leader[env]

    def follower(self, env: int, slot: int) -> list[str]:
        return self._follower[env][slot]

    def add_leader(self, t: int, dcm: np.ndarray, outcome: np.ndarray) -> None:
        """TTI ``t`` as every BS saw it: the DCMs (B, N) executed and the outcomes (B, N)."""
        if self.k:
            for b, lines in enumerate(self._leader):
                lines.append(leader_history_line(t, dcm[b], outcome[b]))
                del lines[:-self.k]

    def add_follower(self, t: int, slots: Sequence[tuple[int, int]], dcm_bits: np.ndarray,
                     bitmap: np.ndarray, ucm: np.ndarray, feedback: np.ndarray) -> None:
        """TTI ``t`` as the UEs in ``slots`` saw it: DCM bits, executed bitmaps (B, I_max, N),
        UCMs (B, I_max) and their feedback (B, I_max, N)."""
        if self.k:
            for b, i in slots:
                lines = self._follower[b][i]
                lines.append(follower_history_line(t, dcm_bits[b, i], bitmap[b, i], ucm[b, i],
                                                   feedback[b, i]))
                del lines[:-self.k]

    def forget(self, slots: np.ndarray) -> None:
        """UE slots (B, I_max) that left or joined start afresh (churn)."""
        for b, i in np.argwhere(slots):
            self._follower[b][i] = []

    def state_dict(self) -> dict[str, list]:
        return {"leader_history": copy.deepcopy(self._leader),
                "follower_history": copy.deepcopy(self._follower)}

    def load_state_dict(self, state: dict[str, list]) -> None:
        self._leader = copy.deepcopy(state["leader_history"])
        self._follower = copy.deepcopy(state["follower_history"])


# -------------------------------------------------------------------------------- observations
def leader_observation(obs: LeaderObs, env: int, history: Sequence[str] = ()) -> str:
    """o_b,t of environment ``env`` as text: one line per active UE, in rank order."""
    lines = [f"TTI {obs.t}", f"Last TTI: {outcome_text(obs.rbg_outcome[env])}"]
    slots = np.flatnonzero(obs.active[env])
    for rank, i in enumerate(slots, start=1):
        lines.append(f"UE{rank}: ucm {obs.ucm[env, i]} csi {CHANNEL_STATES[obs.csi[env, i]]} "
                     f"served {obs.served_rbgs[env, i]} bsr {obs.queue_report[env, i]}")
    lines.extend(history)
    lines.append(LEADER_CUE)
    return "\n".join(lines)


def follower_observation(obs: FollowerObs, env: int, slot: int,
                         history: Sequence[str] = (), ue: int | None = None) -> str:
    """o_i,t of UE slot ``slot`` in environment ``env`` as text: that UE's state only; with
    ``ue`` (prompt format 2) the first line names the UE ("UE3 TTI 7")."""
    first = f"TTI {obs.t}" if ue is None else f"UE{ue} TTI {obs.t}"
    lines = [first, f"buffer {obs.buffer_dpdus[env, slot]}",
             f"channel {CHANNEL_STATES[obs.channel[env, slot]]}",
             f"DCM {bits_text(obs.dcm_bits[env, slot])}",
             f"Last TTI: {outcome_text(obs.feedback[env, slot])}"]
    lines.extend(history)
    lines.append(FOLLOWER_CUE)
    return "\n".join(lines)


def default_render(system: str, user: str) -> str:
    """Prompt text without a chat template: the meta-prompt, a newline, the observation."""
    return system + "\n" + user


class PromptBuilder:
    """Full prompts ``render(system, user)``: meta-prompt (system) and observation text (user)."""

    def __init__(self, config: TextConfig, n_rbgs: int, ucm_levels: int,
                 render: Callable[[str, str], str] | None = None) -> None:
        if render is not None and not callable(render):
            raise ValueError(f"render = {render!r} is invalid; allowed: None or a callable "
                             "(system, user) -> str")
        self.leader_template, self.follower_template = config.templates()
        self.prompt_format = config.prompt_format
        self.n_rbgs, self.max_ucm = n_rbgs, ucm_levels - 1
        self.render = render or default_render

    def leader(self, obs: LeaderObs, env: int, history: Sequence[str] = ()) -> str:
        system = self.leader_template.format(
            n_rbgs=self.n_rbgs, n_ues=int(obs.n_active[env]), max_ucm=self.max_ucm)
        return self.render(system, leader_observation(obs, env, history))

    def follower(self, obs: FollowerObs, env: int, slot: int,
                 history: Sequence[str] = ()) -> str:
        rank = int(obs.active[env, :slot + 1].sum())  # the UE's number in the DCM
        system = self.follower_template.format(n_rbgs=self.n_rbgs, ue=rank, max_ucm=self.max_ucm)
        ue = rank if self.prompt_format >= 2 else None
        return self.render(system, follower_observation(obs, env, slot, history, ue))
