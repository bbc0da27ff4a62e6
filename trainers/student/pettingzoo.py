"""The student as a PettingZoo policy for :mod:`textgame.pettingzoo_env` (one cell, AEC).

``policy(agent, observation) -> action``: "bs" gets a DCM (MultiDiscrete), "ue_i" a
``{"bitmap", "ucm"}`` dict, from the agent's observation dict alone. Each agent keeps its
own feature history, restarted whenever an observation with t = 0 arrives.

    env = textgame.pettingzoo_env.env(scenario=scenario)
    policy = StudentAECPolicy.load("runs/student/final")
    env.reset(seed=0)
    for agent in env.agent_iter():
        obs, reward, terminated, truncated, _ = env.last()
        env.step(None if terminated or truncated else policy(agent, obs))
"""

from __future__ import annotations

import os

import numpy as np

from textgame.game import FollowerObs, LeaderObs
from textgame.pettingzoo_env import LEADER
from trainers.student.model import StudentModel
from trainers.student.policies import (
    StudentFollower,
    StudentLeader,
    TorchBackend,
    load_student,
)


class StudentAECPolicy:
    """Leader and per-UE follower students behind one ``(agent, observation)`` call."""

    def __init__(self, model: StudentModel, backend=None, seed: int = 0) -> None:
        self.model, self.backend = model, backend or TorchBackend(model)
        self.leader = StudentLeader(model, self.backend)
        self.followers: dict[str, StudentFollower] = {}
        self.rng = np.random.default_rng(seed)  # seeds a sampling student's generators

    @classmethod
    def load(cls, path: str | os.PathLike, runtime: str = "torch",
             seed: int = 0) -> StudentAECPolicy:
        """The student of ``path`` as :func:`trainers.student.policies.load_student` gives it."""
        leader, _ = load_student(path, runtime)
        return cls(leader.model, leader.backend, seed)

    def __call__(self, agent: str, observation: dict):
        if agent == LEADER:
            return self._lead(observation)
        return self._follow(agent, observation)

    def _lead(self, o: dict) -> np.ndarray:
        max_ues, n_rbgs = len(o["active"]), len(o["rbg_outcome"])
        if int(o["t"][0]) == 0:
            self.leader.reset(1, max_ues, n_rbgs, self.rng)
        obs = LeaderObs(t=int(o["t"][0]), active=o["active"][None].astype(bool),
                        n_active=o["n_active"].astype(np.int64), ucm=o["ucm"][None],
                        csi=o["csi"][None], served_rbgs=o["served_rbgs"][None],
                        queue_report=o["queue_report"][None], rbg_outcome=o["rbg_outcome"][None],
                        spectral_efficiency=o["spectral_efficiency"])
        return self.leader.act(obs)[0]

    def _follow(self, agent: str, o: dict) -> dict:
        shape = self.model.shape
        follower = self.followers.setdefault(agent, StudentFollower(self.model, self.backend))
        if int(o["t"][0]) == 0:
            follower.reset(1, 1, shape.n_rbgs, shape.ucm_levels, self.rng)
        obs = FollowerObs(t=int(o["t"][0]), active=o["active"][None].astype(bool),
                          buffer_dpdus=o["buffer_dpdus"][None], buffer_bits=o["buffer_bits"][None],
                          channel=np.array([[o["channel"]]]),
                          dcm_bits=o["dcm_bits"][None, None].astype(bool),
                          feedback=o["feedback"][None, None],
                          last_ucm=np.array([[o["last_ucm"]]]))
        bitmap, ucm = follower.act(obs)
        return {"bitmap": bitmap[0, 0].astype(np.int8), "ucm": int(ucm[0, 0])}
