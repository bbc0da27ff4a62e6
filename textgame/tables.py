"""KPI tables: the one markdown and CSV writer of every command, report and model card.

A *record* is a mapping with some key columns (``policy``, ``case``, ``ues``, ...) and ``kpis``, a
mapping of KPI names to values: a :class:`~textgame.metrics.Summary` (shown as mean ± 95 % CI
half-width), a ``(mean, ci95)`` pair, a number or text. ``kpi_table({label: kpis})`` is the short
form with one key column, ``policy``.
"""

from __future__ import annotations

import csv
import io
import math
import numbers
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from textgame.metrics import KPIS, Summary


def cell(value: Any) -> str:
    """One table cell: 4 significant digits, the CI with 2, ``n/a`` for an empty summary."""
    if isinstance(value, Summary):
        if value.n == 0 or math.isnan(value.mean):
            return "n/a"
        if value.n == 1 or math.isnan(value.ci95):
            return f"{value.mean:.4g}"
        return f"{value.mean:.4g} ± {value.ci95:.2g}"
    if isinstance(value, (tuple, list)) and len(value) == 2:
        return f"{cell(value[0])} ± {cell(value[1])}"
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return str(int(value))
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return f"{float(value):.4g}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def _records(rows: Mapping[str, Mapping[str, Any]] | Iterable[Mapping[str, Any]],
             ) -> list[Mapping[str, Any]]:
    if isinstance(rows, Mapping):
        return [{"policy": label, "kpis": kpis} for label, kpis in rows.items()]
    return list(rows)


def kpi_table(rows: Mapping[str, Mapping[str, Any]] | Iterable[Mapping[str, Any]],
              kpis: Sequence[str] | None = None, keys: Sequence[str] = ("policy",)) -> str:
    """A markdown table: the key columns, then one column per KPI (default: every KPI the rows
    have, in first-seen order); a KPI a row lacks shows as ``–``."""
    records = _records(rows)
    if kpis is None:
        kpis = list(dict.fromkeys(k for r in records for k in r["kpis"]))
    lines = ["| " + " | ".join(list(keys) + list(kpis)) + " |",
             "|" + "---|" * len(keys) + "---:|" * len(kpis)]
    for r in records:
        cells = [cell(r[k]) for k in keys]
        cells += [cell(r["kpis"][k]) if k in r["kpis"] else "–" for k in kpis]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def kpi_csv(rows: Mapping[str, Mapping[str, Any]] | Iterable[Mapping[str, Any]],
            keys: Sequence[str] = ("policy",), kpis: Sequence[str] = KPIS) -> str:
    """CSV with the key columns and, per KPI, its mean, CI half-width and episode count."""
    buffer = io.StringIO()
    fields = list(keys) + [f"{k}_{s}" for k in kpis for s in ("mean", "ci95", "n")]
    writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for r in _records(rows):
        record = {k: r[k] for k in keys}
        for k in kpis:
            value = r["kpis"].get(k)
            if isinstance(value, Summary):
                record.update({f"{k}_mean": value.mean, f"{k}_ci95": value.ci95,
                               f"{k}_n": value.n})
            elif value is not None:
                record[f"{k}_mean"] = value
        writer.writerow(record)
    return buffer.getvalue()
