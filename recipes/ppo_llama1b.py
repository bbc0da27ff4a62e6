"""Stackelberg PPO on the uplink MAC game: ``agentic-mac train`` as a script for accelerate.

    accelerate launch recipes/ppo_llama1b.py --config recipes/configs/tiny_cpu.yaml     # offline
    accelerate launch recipes/ppo_llama1b.py --config recipes/configs/llama1b_qlora.yaml

See ``agentic-mac train --help`` (:mod:`trainers.cli.train`) for every option.
"""

from trainers.cli.train import main

if __name__ == "__main__":
    raise SystemExit(main())
