"""Expert seeding alone: ``agentic-mac seed`` as a script (also under ``accelerate launch``).

    python recipes/seed_experts.py --config recipes/configs/smollm2_cpu.yaml

See ``agentic-mac seed --help`` (:mod:`trainers.cli.seed`) for every option.
"""

from trainers.cli.seed import main

if __name__ == "__main__":
    raise SystemExit(main())
