"""Trained MARL agents as ``textgame.policies`` leaders and followers (any I, same N and K).

``MARLLeader``/``MARLFollower`` keep their feature histories across the TTIs of an episode
(reset by ``reset``), sample with a ``torch.Generator`` seeded from the runner's numpy
generator (or take each head's mode with ``greedy=True``), and keep the tensors of their last
decision in ``last`` -- the rollout of :mod:`trainers.marl.rollout` plays through them, so
training and evaluation share one code path.

    leader, follower = load_marl_policies("runs/mappo/final")
    run_episodes(scenario, leader, follower, episodes=128, n_envs=64, seed=0)
"""

from __future__ import annotations

import os

import numpy as np
import torch

from textgame.game import FollowerObs, LeaderObs
from textgame.policies import FollowerPolicy, LeaderPolicy
from trainers.marl.features import gather_by_rank
from trainers.marl.model import MARLAgents


def torch_generator(rng: np.random.Generator | None) -> torch.Generator:
    """A CPU generator seeded by one draw of the runner's ``rng`` (seed 0 without one)."""
    seed = 0 if rng is None else int(rng.integers(2**62))
    return torch.Generator().manual_seed(seed)


def _check_cell(agents: MARLAgents, n_rbgs: int, ucm_levels: int | None = None) -> None:
    if n_rbgs != agents.n_rbgs:
        raise ValueError(f"n_rbgs = {n_rbgs} is invalid for this model; allowed: "
                         f"{agents.n_rbgs} (the N it was trained with)")
    if ucm_levels is not None and ucm_levels != agents.ucm_levels:
        raise ValueError(f"ucm_levels = {ucm_levels} is invalid for this model; allowed: "
                         f"{agents.ucm_levels} (the K it was trained with)")


class MARLLeader(LeaderPolicy):
    """The BS actor: MAPPO (I_cap slots, zero-padded or truncated) or G-MAC (any I)."""

    def __init__(self, agents: MARLAgents, greedy: bool = False) -> None:
        self.agents, self.greedy = agents, greedy
        self.name = f"{agents.config.algo}_leader"

    def reset(self, n_envs, max_ues, n_rbgs, rng) -> None:
        _check_cell(self.agents, n_rbgs)
        super().reset(n_envs, max_ues, n_rbgs, rng)
        self.features = self.agents.leader_features()
        self.features.reset(n_envs, max_ues)
        self.generator = torch_generator(rng)
        self.width = self.agents.leader_width(max_ues)

    @torch.no_grad()
    def act(self, obs: LeaderObs) -> np.ndarray:
        global_x, ue_x = self.features.push(obs)  # (B, Dg), (B, I_max, Db) slot order
        rows, mask = gather_by_rank(ue_x, obs.active, self.width)  # (B, W, Db), (B, W)
        g, rows, mask = torch.from_numpy(global_x), torch.from_numpy(rows), torch.from_numpy(mask)
        dcm, logp = self.agents.leader_actor.act(g, rows, mask, self.generator, self.greedy)
        dcm = dcm.numpy().astype(np.int64)  # (B, N) in 0..min(I_t, W)
        self.features.record(dcm, obs.active)
        self.last = {"global_x": g, "ue_x": rows, "mask": mask, "dcm": torch.from_numpy(dcm),
                     "logp": logp, "bs_ue_x": torch.from_numpy(ue_x)}
        return dcm


class MARLFollower(FollowerPolicy):
    """The shared UE actor, applied to every UE slot; inactive slots send nothing."""

    def __init__(self, agents: MARLAgents, greedy: bool = False) -> None:
        self.agents, self.greedy = agents, greedy
        self.name = f"{agents.config.algo}_follower"

    def reset(self, n_envs, max_ues, n_rbgs, ucm_levels, rng) -> None:
        _check_cell(self.agents, n_rbgs, ucm_levels)
        super().reset(n_envs, max_ues, n_rbgs, ucm_levels, rng)
        self.features = self.agents.follower_features()
        self.features.reset(n_envs, max_ues)
        self.generator = torch_generator(rng)

    @torch.no_grad()
    def act(self, obs: FollowerObs) -> tuple[np.ndarray, np.ndarray]:
        x = torch.from_numpy(self.features.push(obs))  # (B, I_max, Du)
        out = self.agents.follower_actor.act(x, self.generator, self.greedy)
        active = torch.from_numpy(obs.active)
        self.last = {"ue_x": x, "active": active, **out}
        bitmap = (out["bitmap"] & active[..., None]).numpy()  # (B, I_max, N)
        ucm = torch.where(active, out["ucm"], 0).numpy().astype(np.int64)  # (B, I_max)
        return bitmap, ucm


def load_marl_policies(path: str | os.PathLike, greedy: bool = False
                       ) -> tuple[MARLLeader, MARLFollower]:
    """(leader, follower) from a directory written by ``MARLTrainer.save_model`` (or a
    checkpoint). ``greedy`` takes every head's mode instead of sampling."""
    agents = MARLAgents.load(path)
    return MARLLeader(agents, greedy), MARLFollower(agents, greedy)
