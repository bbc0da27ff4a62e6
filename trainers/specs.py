"""Policy specs: what plays, named on a command line, in one grammar for every command.

    [LABEL=]SPEC
    SPEC = LEADER/FOLLOWER    a textgame heuristic pair (evaluate, distill --teacher)
         | NAME               one role's textgame heuristic (simulate --leader / --followers)
         | marl:DIR           a MAPPO or G-MAC model of trainers.marl
         | student:DIR        a distilled real-time student of trainers.student (any I)
         | llm:DIR_OR_REPO    Stackelberg PPO adapters (a run's final/ or a Hub id) on their base

``{ues}`` and ``{rbgs}`` in DIR are filled from the cell a policy is built for, so
``marl:runs/mappo-s-I{ues}/final`` is MAPPO-S (one run per I). LABEL names the policy in tables
(default: SPEC).

=========  ================================  ===============================================
command    takes                             builds with
=========  ================================  ===============================================
evaluate   ``--policies``: pairs, any kind   :func:`build_policy` (LLMs: the batched rollout)
simulate   ``--leader``/``--followers``      :func:`build_role`
distill    ``--teacher``: a pair, any kind   :func:`trainers.student.teachers.build_teacher`
=========  ================================  ===============================================

Parsing (:func:`parse_spec`) and the checks before any work (:func:`check_spec`) import nothing
heavy; torch and transformers load inside the build functions, for the kind being built. Every
bad spec raises :class:`SpecError`, a :class:`~textgame.config.ConfigError`: one line naming the
field (or 'policy'), the spec and what is allowed, which the commands print with exit status 2.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, NoReturn

from textgame.config import CellConfig, ConfigError
from textgame.policies import (
    FOLLOWERS,
    LEADERS,
    FollowerPolicy,
    LeaderPolicy,
    make_follower,
    make_leader,
)

KINDS = ("heuristic", "marl", "student", "llm")
LEARNED = ("marl", "student", "llm")
ROLES = ("leader", "follower")
Role = Literal["leader", "follower"]
_HEURISTICS = {"leader": LEADERS, "follower": FOLLOWERS}
_LEARNED_FORMS = "'marl:DIR', 'student:DIR' or 'llm:DIR_OR_REPO'"
_HUB_ID = re.compile(r"^[\w.-]+/[\w.-]+$")


class SpecError(ConfigError):
    """A policy spec that cannot be parsed or played: the field, the spec, what is allowed."""


def _fail(field: str | None, text: str, allowed: str) -> NoReturn:
    subject = f"{field} = {text!r}" if field else f"policy {text!r}"
    raise SpecError(f"{subject} is invalid; allowed: {allowed}")


@dataclass(frozen=True)
class PolicySpec:
    """A parsed spec: ``label`` (its name in tables), ``kind`` (one of :data:`KINDS`) and
    ``target``: ``LEADER/FOLLOWER`` or one role's NAME (heuristics), else DIR or a Hub id."""

    label: str
    kind: str
    target: str

    @property
    def text(self) -> str:
        """The spec as written (``label=`` only when it names it otherwise)."""
        spec = self.target if self.kind == "heuristic" else f"{self.kind}:{self.target}"
        return spec if self.label == spec else f"{self.label}={spec}"

    @property
    def path(self) -> str:
        """DIR or the Hub id of a learned policy ('' for heuristics), placeholders unfilled."""
        return "" if self.kind == "heuristic" else self.target

    def path_for(self, cell: CellConfig) -> str:
        """``path`` with ``{ues}`` / ``{rbgs}`` filled from ``cell`` (MAPPO-S: one run per I)."""
        return self.path.format(ues=cell.max_ues, rbgs=cell.n_rbgs)


def parse_spec(text: str, role: Role | None = None, field: str | None = None) -> PolicySpec:
    """The spec ``text``: a heuristic pair ``LEADER/FOLLOWER`` (``role`` None) or one role's
    heuristic NAME (``role`` 'leader' or 'follower'), or a learned kind, each optionally
    ``label=``-prefixed. ``field`` names the option in the error ('policy' when None)."""
    label, _, spec = text.rpartition("=") if "=" in text.split(":", 1)[0] else ("", "", text)
    kind, sep, target = spec.partition(":")
    if sep and kind in LEARNED:
        if not target:
            _fail(field, text, f"'{kind}:' followed by a directory or Hub id")
        try:
            target.format(ues=0, rbgs=0)
        except (KeyError, IndexError, ValueError):
            _fail(field, text, f"'{kind}:DIR' with no placeholders but {{ues}} and {{rbgs}}")
        return PolicySpec(label or spec, kind, target)
    if role is None:
        leader, sep, follower = spec.partition("/")
        if not sep or leader not in LEADERS or follower not in FOLLOWERS:
            _fail(field, text, f"'LEADER/FOLLOWER' with LEADER in {sorted(LEADERS)} and "
                               f"FOLLOWER in {sorted(FOLLOWERS)}, {_LEARNED_FORMS}, each "
                               "optionally prefixed by 'label='")
    elif spec not in _HEURISTICS[role]:
        _fail(field, text, f"one of {sorted(_HEURISTICS[role])}, {_LEARNED_FORMS}, each "
                           "optionally prefixed by 'label='")
    return PolicySpec(label or spec, "heuristic", spec)


# ------------------------------------------------------------------------------- checks
def check_spec(spec: PolicySpec, field: str) -> None:
    """The target of a learned spec can be had, before any work: a directory (``marl``,
    ``student``), or a complete policy directory or a Hub id that resolves here (``llm``).
    Targets with ``{ues}``/``{rbgs}`` are checked per cell, when built."""
    if spec.kind == "heuristic" or "{" in spec.path:
        return
    if spec.kind == "llm":
        _policy_dir(field, spec.path, spec.text)
    elif not Path(spec.path).exists():
        _fail(field, spec.text, f"'{spec.kind}:' followed by an existing directory")


def check_policy_dir(owner: str, name: str, path: str, spec: str | None = None) -> Path:
    """``path`` is a complete saved policy directory, or a Hub repository id whose policy
    files can be had now (the local cache, or the Hub when it is reachable): resolved before
    any work, so an unreachable id is one line, not a traceback mid-evaluation. Returns the
    local directory; errors name ``owner.name`` and ``spec`` (default: ``path``)."""
    return _policy_dir(f"{owner}.{name}", path, path if spec is None else spec)


def _policy_dir(field: str, path: str, text: str) -> Path:
    from trainers.runs.hub import HubError, check_layout, download

    if Path(path).exists():
        try:
            return check_layout(path)
        except ValueError as error:
            _fail(field, text, f"a complete policy directory ({error})")
    if not _HUB_ID.match(path):
        _fail(field, text, "an existing policy directory or a Hub repository id")
    try:
        return download(path)
    except (HubError, ValueError) as error:
        reason = str(error).strip().splitlines()[0][:200]
        _fail(field, text, "a policy directory, or a Hub repository id reachable from here or "
                           f"in the local cache (resolving it failed: {reason})")


# ------------------------------------------------------------------------------- builds
def build_policy(spec: PolicySpec, cell: CellConfig, *, greedy: bool = False,
                 temperature: float | None = None, ues_as_trained: bool = True,
                 base_model: str | None = None, device: str | None = None,
                 field: str | None = None, where: str = ""
                 ) -> tuple[LeaderPolicy, FollowerPolicy]:
    """(leader, follower) textgame policies of ``spec`` for cells like ``cell`` (its N, K and,
    for ``{ues}``/``{rbgs}``, its I_max).

    Play settings: ``greedy``, a MARL model's heads' modes instead of samples; ``temperature``,
    an LLM's (default: its run's final one); ``ues_as_trained``, the UEs of an LLM run trained
    with a heuristic follower (the Dictator ablation) are that heuristic; ``base_model`` and
    ``device`` of an LLM (``device`` also of a MARL model). ``field`` and ``where`` (e.g. the
    case) go into the error of a target that cannot be played.
    """
    if spec.kind == "heuristic":
        leader, sep, follower = spec.target.partition("/")
        if not sep:
            _fail(field, spec.text, "'LEADER/FOLLOWER' (a heuristic pair), or "
                                    f"{_LEARNED_FORMS}")
        return make_leader(leader, cell), make_follower(follower)
    path = spec.path_for(cell)
    missing = f"{path} (for {where})" if where else path
    if spec.kind == "marl":
        from trainers.marl.model import CONFIG_FILE

        if not (Path(path) / CONFIG_FILE).is_file():
            _fail(field, spec.text, f"'marl:DIR' with DIR a MARL model directory ({CONFIG_FILE}"
                                    ", as agentic-mac train-marl writes); there is no MARL "
                                    f"model directory {missing}")
        from trainers.marl import load_marl_policies

        leader, follower = load_marl_policies(path, greedy=greedy)
        if device:
            leader.agents.to(device)  # the follower shares the agents
        return leader, follower
    if spec.kind == "student":
        from trainers.student.model import CONFIG_FILE as STUDENT_FILE

        if not (Path(path) / STUDENT_FILE).is_file():
            _fail(field, spec.text, "'student:DIR' with DIR a student directory "
                                    f"({STUDENT_FILE}, as agentic-mac distill writes); there is "
                                    f"no student directory {missing}")
        from trainers.student.policies import load_student

        return load_student(path)
    return _llm_policies(spec, path, cell, temperature, ues_as_trained, base_model, device,
                         field)


def _llm_policies(spec: PolicySpec, path: str, cell: CellConfig, temperature: float | None,
                  ues_as_trained: bool, base_model: str | None, device: str | None,
                  field: str | None) -> tuple[LeaderPolicy, FollowerPolicy]:
    from trainers.policy.scheduler import load_llm_policies
    from trainers.runs.hub import HubError

    try:
        return load_llm_policies(path, base_model=base_model, device=device,
                                 ucm_levels=cell.ucm_levels, temperature=temperature,
                                 ues_as_trained=ues_as_trained)
    except (OSError, ValueError, HubError) as error:
        _fail(field, spec.text, f"'llm:DIR_OR_REPO' naming Stackelberg PPO adapters ({error})")


def build_role(spec: PolicySpec, role: Role, cell: CellConfig, **play
               ) -> LeaderPolicy | FollowerPolicy:
    """The ``role`` policy of ``spec``: a heuristic NAME (or that role of a pair), or that
    role of a learned policy (:func:`build_policy` and its ``play`` settings)."""
    if spec.kind == "heuristic" and "/" not in spec.target:
        return make_leader(spec.target, cell) if role == "leader" else make_follower(spec.target)
    return build_policy(spec, cell, **play)[ROLES.index(role)]
