"""``python -m trainers.student`` is ``agentic-mac distill`` (:mod:`trainers.cli.distill`)."""

from trainers.cli.distill import main

if __name__ == "__main__":
    raise SystemExit(main())
