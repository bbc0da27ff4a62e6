"""Teachers: any policy spec of :func:`trainers.evaluation.parse_policy` as a textgame
leader/follower pair, plus the D(I) it was trained on.

- ``LEADER/FOLLOWER``: the textgame heuristics (valid at every I: no D(I) of their own);
- ``marl:DIR``: a MAPPO/G-MAC model (:func:`trainers.marl.load_marl_policies`), D(I) from its
  ``marl_config.json``;
- ``llm:DIR_OR_REPO``: Stackelberg PPO adapters played through
  :mod:`trainers.policy.scheduler` (k-TTI history included; the UEs of a Dictator run by that
  heuristic), D(I) from their ``trainer_config.json``. ``greedy`` samples at the run's final
  temperature (PAG sampling has no temperature 0), otherwise at 1.0.

A bad spec raises :class:`textgame.config.ConfigError` naming ``DistillConfig.teacher``, so
the command exits with the same one-line error as evaluate.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from textgame.config import CellConfig, ConfigError
from textgame.policies import FollowerPolicy, LeaderPolicy, make_follower, make_leader
from trainers.evaluation.suites import parse_policy


@dataclass
class Teacher:
    leader: LeaderPolicy
    follower: FollowerPolicy
    ue_counts: tuple[int, ...] | None  # the D(I) it was trained on; None = any


def _bad(spec: str, reason: str) -> ConfigError:
    return ConfigError(f"DistillConfig.teacher = {spec!r} is invalid; allowed: {reason}")


def build_teacher(spec: str, cell: CellConfig, greedy: bool = True,
                  base_model: str | None = None, device: str | None = None) -> Teacher:
    """The teacher of ``spec`` for cells like ``cell`` (its N and K)."""
    try:
        parsed = parse_policy(spec)
    except ValueError as error:
        raise _bad(spec, str(error).split("allowed: ", 1)[-1]) from None
    if parsed.kind == "heuristic":
        return Teacher(make_leader(parsed.leader, cell), make_follower(parsed.follower), None)
    if parsed.kind == "marl":
        from trainers.marl import load_marl_policies

        if not (Path(parsed.path) / "marl_config.json").is_file():
            raise _bad(spec, "'marl:DIR' with DIR a MARL model directory (marl_config.json); "
                             f"{parsed.path} is none")
        leader, follower = load_marl_policies(parsed.path, greedy=greedy)
        if device:
            leader.agents.to(device)
        ue_counts = leader.agents.config.scenario_config().cell.ue_counts
        return Teacher(leader, follower, tuple(ue_counts))
    return _llm_teacher(parsed.path, cell, greedy, base_model, device)


def _llm_teacher(path: str, cell: CellConfig, greedy: bool, base_model: str | None,
                 device: str | None) -> Teacher:
    from trainers.policy.scheduler import load_llm_policies
    from trainers.runs.hub import HubError

    try:
        leader, follower = load_llm_policies(
            path, base_model=base_model, device=device, ucm_levels=cell.ucm_levels,
            temperature=None if greedy else 1.0, ues_as_trained=True)
    except (OSError, ValueError, HubError) as error:
        raise _bad(f"llm:{path}", "'llm:DIR_OR_REPO' naming Stackelberg PPO adapters "
                                  f"({error})") from None
    return Teacher(leader, follower, tuple(leader.config.scenario_config().cell.ue_counts))


def tell_executed(policy: LeaderPolicy, dcm: np.ndarray, active: np.ndarray) -> None:
    """A leader whose memory holds its own last DCM learns the one that was executed."""
    if hasattr(policy, "executed"):
        policy.executed(dcm, active)
    elif hasattr(getattr(policy, "features", None), "record"):  # MARL leaders
        policy.features.record(dcm, active)
