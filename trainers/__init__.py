"""The learning side of agentic-mac (torch): everything that trains or serves a policy.

One epoch of Stackelberg PPO (design doc §6, Algorithm 1) reads top to bottom through:

=====================================  ==========================================================
Algorithm 1                            module
=====================================  ==========================================================
base LM + ``leader``/``follower``      :mod:`trainers.policy.models` (adapters, value heads, QLoRA;
                                       forwards in :mod:`~trainers.policy.forwards`)
prompts -> token ids                   :mod:`trainers.policy.encoding`, :mod:`~trainers.policy.chat`
meta-prompt KV reuse                   :mod:`trainers.policy.prefix_cache`
PAG-constrained actions (eqs. 12-14)   :mod:`trainers.pag.sampler` over :mod:`trainers.pag.backends`
play B envs, one batched call a role   :mod:`trainers.policy.player` (what play needs:
                                       :mod:`~trainers.policy.play_config`)
GAE per env and UE slot (eq. 8)        :mod:`trainers.stackelberg.rollout`
GAE, clipped losses, KL (eqs. 8-10)    :mod:`trainers.ppo` (shared with the MARL baselines)
one role's update (leader, follower)   :mod:`trainers.stackelberg.update`
epochs, checkpoints, Hub               :mod:`trainers.stackelberg.trainer`, :mod:`trainers.runs`
expert warm start (TRL ``SFTTrainer``) :mod:`trainers.stackelberg.seeding`
=====================================  ==========================================================

Around it: :mod:`trainers.marl` (MAPPO-S/-G, G-MAC), :mod:`trainers.evaluation` (the paper's
scenario suites, tables, figures) and :mod:`trainers.cli` (the ``agentic-mac`` command).
"""
