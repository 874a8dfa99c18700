"""A per-task table of a run's evaluation next to the generator's oracle, for terminals.

`make run` prints it so a newcomer sees at once how close the model came to the best
possible: lift = (AUROC - 0.5) / (oracle AUROC - 0.5), 1.0 meaning as good as the truth.
"""

from __future__ import annotations

import math
from typing import Any


def _fmt(value: Any, spec: str) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return format(float(value), spec)


def auroc_lift(auroc: float | None, oracle_auroc: float | None) -> float | None:
    """Share of the oracle's AUROC gain over chance that the model achieved."""
    if auroc is None or oracle_auroc is None or oracle_auroc <= 0.5:
        return None
    return (auroc - 0.5) / (oracle_auroc - 0.5)


def summary_table(metrics: dict[str, Any], oracle: dict[str, Any] | None = None) -> str:
    """Plain-text table: task, AUROC vs oracle, lift, RCE vs oracle, calibration, positives/count."""
    oracle_tasks = (oracle or {}).get("tasks", {})
    header = ("task", "AUROC", "oracle", "lift", "RCE", "oracle RCE", "calibration", "positives/count")
    rows = []
    for task, values in metrics["tasks"].items():
        best = oracle_tasks.get(task, {})
        rows.append((
            task,
            _fmt(values.get("auroc"), ".4f"),
            _fmt(best.get("auroc"), ".4f"),
            _fmt(auroc_lift(values.get("auroc"), best.get("auroc")), ".2f"),
            _fmt(values.get("rce"), ".2f"),
            _fmt(best.get("rce"), ".2f"),
            _fmt(values.get("calibration"), ".3f"),
            f"{int(values.get('positives') or 0)}/{int(values.get('count') or 0)}",
        ))
    widths = [max(len(str(r[i])) for r in (header, *rows)) for i in range(len(header))]
    lines = ["  ".join(h.ljust(w) if i == 0 else h.rjust(w) for i, (h, w) in enumerate(zip(header, widths, strict=True)))]
    lines.append("  ".join("-" * w for w in widths))
    for row in rows:
        lines.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))))
    gauc = (metrics.get("ranking") or {}).get("gauc")
    if gauc is not None:
        lines.append(f"ranking score GAUC (per user): {_fmt(gauc, '.4f')}")
    return "\n".join(lines)
