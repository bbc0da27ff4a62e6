"""``agentic-mac SUBCOMMAND [options]``: dispatch to the subcommand's ``main`` (imported lazily,
so ``agentic-mac simulate --help`` does not load torch models)."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

COMMANDS = {
    "train": ("trainers.cli.train", "Stackelberg PPO of the leader and follower adapters"),
    "seed": ("trainers.cli.seed", "expert seeding (SFT) of both adapters alone"),
    "evaluate": ("trainers.cli.evaluate", "evaluate policies on the paper's scenario suites"),
    "train-marl": ("trainers.cli.train_marl", "train a MAPPO or G-MAC baseline"),
    "simulate": ("trainers.cli.simulate", "a KPI table of policy pairs on scenarios"),
    "distill": ("trainers.cli.distill", "distil any policy into a real-time student"),
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: agentic-mac SUBCOMMAND [--config FILE.yaml] [--option value ...]", "",
             "subcommands:"]
    lines += [f"  {name:<{width}}  {text}" for name, (_, text) in COMMANDS.items()]
    lines += ["", "agentic-mac SUBCOMMAND --help lists the subcommand's options and defaults."]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"agentic-mac: error: unknown subcommand {name!r}; allowed: {list(COMMANDS)}",
              file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    return module.main(rest)


if __name__ == "__main__":
    raise SystemExit(main())
