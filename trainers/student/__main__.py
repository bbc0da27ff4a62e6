"""``python -m trainers.student --teacher SPEC --output_dir DIR``: distil a real-time student.

Every :class:`DistillConfig` field is a flag (``--dagger_rounds 4``) or a key of a YAML file
given with ``--config``. Prints the per-round agreement with the teacher and the retention
table (leader utility and throughput of student vs teacher at every I of ``eval_ues``).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from textgame.config import ConfigError
from trainers.student.config import DistillConfig


def make_parser():
    from trl import TrlParser

    return TrlParser((DistillConfig,), prog="python -m trainers.student")


def main(argv: Sequence[str] | None = None) -> int:
    parser = make_parser()
    try:
        (config,) = parser.parse_args_and_config(args=argv)
        from trainers.student.distill import distill

        result = distill(config)
    except (ConfigError, FileNotFoundError) as error:
        parser.error(str(error))
    from trainers.student.retention import markdown

    last = result["history"][-1]
    print(f"\nstudent: {result['final']} (distilled in {result['seconds']:.0f} s); last round: "
          f"RBG agreement {last['rbg_agreement']:.4f}, bitmap {last['bitmap_agreement']:.4f}, "
          f"UCM {last['ucm_agreement']:.4f}\n")
    sys.stdout.write(markdown(result["retention"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
