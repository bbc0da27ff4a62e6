"""Stackelberg PPO (design doc §6): the config, the rollout of B text games, one role's PPO
update, the trainer (epochs, checkpoints, Hub) and the expert warm start."""
