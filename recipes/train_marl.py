"""A learned MARL baseline (MAPPO / G-MAC): ``agentic-mac train-marl`` as a script.

    python recipes/train_marl.py --config recipes/configs/mappo_cpu.yaml

See ``agentic-mac train-marl --help`` (:mod:`trainers.cli.train_marl`) for every option.
"""

from trainers.cli.train_marl import main

if __name__ == "__main__":
    raise SystemExit(main())
