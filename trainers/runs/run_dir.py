"""The files a training run writes into its output directory, shared by every trainer.

``checkpoint-<step>/`` directories (written elsewhere via a ``.tmp-`` directory and
``os.replace``), and the metrics: ``metrics.jsonl`` (one record per logged step, appended) and
``metrics.csv`` (rewritten with the union of the records' keys, the step first).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable
from pathlib import Path

CHECKPOINT_PREFIX = "checkpoint-"


def list_checkpoints(output_dir: str | Path) -> list[Path]:
    """Complete checkpoints, oldest first (``.tmp-`` directories are never listed)."""
    return sorted(Path(output_dir).glob(f"{CHECKPOINT_PREFIX}*"),
                  key=lambda p: int(p.name[len(CHECKPOINT_PREFIX):]))


def write_metrics(output_dir: str | Path, records: Iterable[dict], step: str,
                  append: dict | None = None) -> None:
    """``metrics.csv`` from ``records``; ``metrics.jsonl`` gets ``append`` as one more line, or
    is rewritten from ``records`` when ``append`` is None (after a resume)."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    records = list(records)
    if append is None:
        with open(output_dir / "metrics.jsonl", "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in records)
    else:
        with open(output_dir / "metrics.jsonl", "a") as f:
            f.write(json.dumps(append) + "\n")
    keys = sorted({k for r in records for k in r}, key=lambda k: (k != step, k))
    with open(output_dir / "metrics.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        writer.writerows(records)
