"""``MARLAgents``: the four networks of one MARL baseline, their feature trackers, save and load.

A saved model is a directory with ``marl_config.json`` (the :class:`MARLConfig` and the sizes
the networks were built for) and ``model.safetensors`` (every network's weights).
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

from safetensors.torch import load_file, save_file
from torch import nn

from textgame.config import ScenarioConfig
from trainers.marl.bs_actors import GMACLeader, MAPPOLeader
from trainers.marl.config import MARLConfig
from trainers.marl.features import FollowerFeatures, LeaderFeatures
from trainers.marl.networks import FlatLeaderCritic, FollowerCritic, PooledLeaderCritic, UEActor

CONFIG_FILE, WEIGHTS_FILE = "marl_config.json", "model.safetensors"


class MARLAgents(nn.Module):
    """BS actor and critic, shared UE actor and critic, for a cell with N RBGs and K UCMs.

    The sizes that fix the architecture come from the training scenario: N, K, the buffer
    capacity and T (feature normalisation) and, for MAPPO, the UE capacity I_cap. Any other
    scenario with the same N and K can be played (:mod:`trainers.marl.policies`).
    """

    def __init__(self, config: MARLConfig, scenario: ScenarioConfig | None = None) -> None:
        super().__init__()
        self.config = config
        cell = (scenario or config.scenario_config()).cell
        self.n_rbgs, self.ucm_levels = cell.n_rbgs, cell.ucm_levels
        self.buffer_capacity, self.episode_ttis = cell.buffer_dpdus, cell.episode_ttis
        self.capacity = config.ue_capacity if config.algo == "mappo" else None
        follower = self.follower_features()
        leader = self.leader_features()
        du, dg, db = follower.dim, leader.global_dim, leader.ue_dim
        self.follower_actor = UEActor(du, config.ue_hidden, config.ue_latent, self.n_rbgs,
                                      self.ucm_levels)
        self.follower_critic = FollowerCritic(du, db, dg, config.critic_hidden)
        if config.algo == "mappo":
            self.leader_actor = MAPPOLeader(dg, db, self.capacity, self.n_rbgs, config.bs_hidden,
                                            config.bs_latent)
            self.leader_critic = FlatLeaderCritic(dg, db, self.capacity, config.critic_hidden)
        else:
            self.leader_actor = GMACLeader(dg, db, self.n_rbgs, config.encoder_hidden,
                                           config.embedding_dim, config.dcm_embedding_dim,
                                           config.gru_hidden)
            self.leader_critic = PooledLeaderCritic(dg, db, config.embedding_dim,
                                                    config.critic_hidden)

    # ------------------------------------------------------------------------ features
    def follower_features(self) -> FollowerFeatures:
        return FollowerFeatures(self.config.history_len, self.n_rbgs, self.ucm_levels,
                                self.buffer_capacity)

    def leader_features(self) -> LeaderFeatures:
        return LeaderFeatures(self.config.history_len, self.n_rbgs, self.ucm_levels,
                              self.buffer_capacity, self.episode_ttis)

    def leader_width(self, max_ues: int) -> int:
        """UE rows the BS actor sees: I_cap for MAPPO (pad/truncate), all slots for G-MAC."""
        return self.capacity if self.capacity is not None else max_ues

    def role_parameters(self, role: str) -> tuple[list, list]:
        """(actor parameters, critic parameters) of 'leader' or 'follower'."""
        actor, critic = getattr(self, f"{role}_actor"), getattr(self, f"{role}_critic")
        return list(actor.parameters()), list(critic.parameters())

    # --------------------------------------------------------------------- save / load
    def save(self, directory: str | os.PathLike) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        meta = {"config": dataclasses.asdict(self.config),
                "cell": {"n_rbgs": self.n_rbgs, "ucm_levels": self.ucm_levels,
                         "buffer_dpdus": self.buffer_capacity,
                         "episode_ttis": self.episode_ttis},
                "ue_capacity": self.capacity}
        (directory / CONFIG_FILE).write_text(json.dumps(meta, indent=2))
        state = {k: v.detach().contiguous() for k, v in self.state_dict().items()}
        save_file(state, str(directory / WEIGHTS_FILE))
        return directory

    @classmethod
    def load(cls, directory: str | os.PathLike) -> MARLAgents:
        directory = Path(directory)
        if not (directory / CONFIG_FILE).is_file():
            raise FileNotFoundError(f"{directory} holds no {CONFIG_FILE}; expected a directory "
                                    "written by MARLTrainer.save_model or a checkpoint")
        meta = json.loads((directory / CONFIG_FILE).read_text())
        meta["config"].pop("resume", None)  # renamed resume_from_checkpoint; models before it
        config = MARLConfig(**meta["config"])
        agents = cls(config)
        agents.load_state_dict(load_file(str(directory / WEIGHTS_FILE)))
        agents.eval()
        return agents
