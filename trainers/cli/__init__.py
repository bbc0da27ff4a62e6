"""The ``agentic-mac`` command: one entry point, one option convention (:mod:`trainers.cli.args`).

=================  ==========================================  ================================
subcommand         what it does                                module
=================  ==========================================  ================================
``train``          Stackelberg PPO of the leader/follower      :mod:`trainers.cli.train`
``seed``           expert SFT warm start of both adapters       :mod:`trainers.cli.seed`
``evaluate``       any policies on the paper's suites          :mod:`trainers.cli.evaluate`
``train-marl``     MAPPO / G-MAC baselines                     :mod:`trainers.cli.train_marl`
``simulate``       a KPI table of policy pairs on scenarios    :mod:`trainers.cli.simulate`
``distill``        a real-time student from any teacher        :mod:`trainers.cli.distill`
=================  ==========================================  ================================

Each module has ``main(argv) -> exit status``; the ``recipes/`` scripts call the same functions,
so ``accelerate launch recipes/ppo_llama1b.py --config ...`` is ``agentic-mac train``.
"""
