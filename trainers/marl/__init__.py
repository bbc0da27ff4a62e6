"""Learned MARL baselines (design §3, paper App. B-E): MAPPO-S/-G and G-MAC.

    trainer = MARLTrainer(MARLConfig(algo="gmac", output_dir="runs/gmac"))
    trainer.train(); trainer.save_model()
    leader, follower = load_marl_policies("runs/gmac/final")   # textgame policies, any I
"""

from trainers.marl.config import MARLConfig
from trainers.marl.model import MARLAgents
from trainers.marl.policies import MARLFollower, MARLLeader, load_marl_policies
from trainers.marl.trainer import MARLTrainer

__all__ = ["MARLAgents", "MARLConfig", "MARLFollower", "MARLLeader", "MARLTrainer",
           "load_marl_policies"]
