"""Policies on the paper's scenario suites: ``agentic-mac evaluate`` as a script (also under
``accelerate launch``).

    python recipes/evaluate.py --suites ues --episodes 64 --output_dir runs/eval

See ``agentic-mac evaluate --help`` (:mod:`trainers.cli.evaluate`) for every option.
"""

from trainers.cli.evaluate import main

if __name__ == "__main__":
    raise SystemExit(main())
