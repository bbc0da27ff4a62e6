"""Teachers: any pair spec of :mod:`trainers.specs` as a textgame leader/follower pair, plus
the D(I) it was trained on and how its leader learns the DCM executed in its stead (DAgger).

- ``LEADER/FOLLOWER`` (:class:`HeuristicTeacher`): the textgame heuristics, valid at every I
  (no D(I) of their own) and memoryless;
- ``marl:DIR`` (:class:`MARLTeacher`): a MAPPO/G-MAC model, D(I) from its ``marl_config.json``;
- ``student:DIR`` (:class:`StudentTeacher`): a distilled student, valid at every I;
- ``llm:DIR_OR_REPO`` (:class:`LLMTeacher`): Stackelberg PPO adapters played through
  :mod:`trainers.policy.scheduler` (k-TTI history included; the UEs of a Dictator run by that
  heuristic), D(I) from their ``play_config.json``. ``greedy`` samples at the run's final
  temperature (PAG sampling has no temperature 0), otherwise at 1.0.

A bad spec raises :class:`trainers.specs.SpecError` naming ``DistillConfig.teacher``, so the
command exits with the same one-line error as evaluate.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from textgame.config import CellConfig
from textgame.policies import FollowerPolicy, LeaderPolicy
from trainers.specs import build_policy, parse_spec

if TYPE_CHECKING:
    from trainers.marl.policies import MARLLeader
    from trainers.policy.scheduler import LLMLeader
    from trainers.student.policies import StudentLeader

FIELD = "DistillConfig.teacher"


@dataclass
class Teacher(ABC):
    """A leader/follower pair that labels states; ``ue_counts``: the D(I) it was trained on
    (None = any)."""

    leader: LeaderPolicy
    follower: FollowerPolicy
    ue_counts: tuple[int, ...] | None = None

    @abstractmethod
    def executed(self, dcm: np.ndarray, active: np.ndarray) -> None:
        """The DCM (B, N) executed in the leader's stead (a DAgger mixture), for a leader whose
        next decision depends on its own last one."""

    @classmethod
    def of(cls, leader: LeaderPolicy, follower: FollowerPolicy) -> Teacher:
        return cls(leader, follower)


@dataclass
class HeuristicTeacher(Teacher):
    """Textgame heuristics: every decision is a function of the observation alone."""

    def executed(self, dcm: np.ndarray, active: np.ndarray) -> None:
        pass


@dataclass
class MARLTeacher(Teacher):
    """MAPPO/G-MAC: the leader's features hold the grants of its last DCM."""

    leader: MARLLeader

    def executed(self, dcm: np.ndarray, active: np.ndarray) -> None:
        self.leader.features.record(dcm, active)

    @classmethod
    def of(cls, leader: MARLLeader, follower: FollowerPolicy) -> MARLTeacher:
        trained = leader.agents.config.scenario_config().cell.ue_counts
        return cls(leader, follower, tuple(trained))


@dataclass
class LLMTeacher(Teacher):
    """Stackelberg PPO adapters: the leader's k-TTI history holds the DCMs that were sent."""

    leader: LLMLeader

    def executed(self, dcm: np.ndarray, active: np.ndarray) -> None:
        self.leader.executed(dcm, active)

    @classmethod
    def of(cls, leader: LLMLeader, follower: FollowerPolicy) -> LLMTeacher:
        return cls(leader, follower, tuple(leader.config.scenario_config().cell.ue_counts))


@dataclass
class StudentTeacher(Teacher):
    """A distilled student: its leader's history stack holds the DCMs that were sent."""

    leader: StudentLeader

    def executed(self, dcm: np.ndarray, active: np.ndarray) -> None:
        self.leader.executed(dcm, active)


TEACHERS: dict[str, type[Teacher]] = {"heuristic": HeuristicTeacher, "marl": MARLTeacher,
                                      "student": StudentTeacher, "llm": LLMTeacher}


def build_teacher(spec: str, cell: CellConfig, greedy: bool = True,
                  base_model: str | None = None, device: str | None = None) -> Teacher:
    """The teacher of the pair spec ``spec`` for cells like ``cell`` (its N and K)."""
    parsed = parse_spec(spec, field=FIELD)
    leader, follower = build_policy(parsed, cell, greedy=greedy,
                                    temperature=None if greedy else 1.0, ues_as_trained=True,
                                    base_model=base_model, device=device, field=FIELD)
    return TEACHERS[parsed.kind].of(leader, follower)
