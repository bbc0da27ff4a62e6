"""``agentic-mac distill``: a real-time student from any teacher (paper App. C-C, Fig. 14).

    agentic-mac distill --teacher max_weight/dictator --output_dir runs/student-mw
    agentic-mac distill --teacher llm:runs/tiny-cpu/final --output_dir runs/student-llm
    agentic-mac distill --teacher marl:runs/gmac/final --output_dir runs/student-gmac
    agentic-mac distill --teacher student:runs/student-gmac/final --output_dir runs/student-2
    agentic-mac distill --teacher max_weight/dictator --baseline ppo --output_dir runs/fig14

Options are the fields of ``DistillConfig``; ``--teacher`` is a pair spec of
:mod:`trainers.specs`, as evaluate's ``--policies``. Behaviour cloning on teacher rollouts, then
DAgger rounds on the student's own states; prints the per-round agreement with the teacher and the
retention table (student vs teacher leader utility and throughput at every I of ``eval_ues``).
``--baseline ppo`` also trains the same student architecture from scratch by PPO for the same
wall time (``--baseline_seconds`` to set it) into ``output_dir/baseline-ppo`` and adds its
columns: the undistilled baseline of Fig. 14.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from trainers.cli.args import (
    check_extra,
    check_output_dir_writable,
    check_run_dir,
    parse,
    run,
    set_num_threads,
)
from trainers.specs import parse_spec
from trainers.student.config import DistillConfig
from trainers.student.teachers import FIELD

PROG = "agentic-mac distill"


def distill(config: DistillConfig) -> dict:
    from trainers.student.distill import distill as run_distillation
    from trainers.student.retention import markdown

    parse_spec(config.teacher, field=FIELD)  # a bad spec before any work; the distiller builds it
    if config.export_onnx:  # the [student] extra: torch.export -> onnxscript -> onnx
        check_extra("student", "export_onnx", True, ("onnx", "onnxscript"))
    if config.eval_runtime == "onnx":
        check_extra("student", "eval_runtime", "onnx", ("onnxruntime",))
    check_output_dir_writable("output_dir", config.output_dir)
    check_run_dir("DistillConfig", config)
    set_num_threads(config.num_threads)
    result = run_distillation(config)
    last = result["history"][-1]
    print(f"\nstudent: {result['final']} (distilled in {result['seconds']:.0f} s); last round: "
          f"RBG agreement {last['rbg_agreement']:.4f}, bitmap {last['bitmap_agreement']:.4f}, "
          f"UCM {last['ucm_agreement']:.4f}")
    if "baseline" in result:
        base = result["baseline"]
        print(f"PPO baseline: {base['final']} ({base['updates']} updates in "
              f"{base['seconds']:.0f} s)")
    print()
    sys.stdout.write(markdown(result["retention"]))
    return result


def _main(argv: Sequence[str] | None) -> int:
    (config,) = parse((DistillConfig,), argv, PROG, __doc__)
    distill(config)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run(_main, argv, PROG)


if __name__ == "__main__":
    raise SystemExit(main())
