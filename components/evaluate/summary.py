"""A per-task table of a run's evaluation next to the generator's oracle, for terminals.

`make run` prints it so a newcomer sees at once how close the model came to the best
possible on the same eval rows: AUROC lift = (AUROC - 0.5) / (oracle AUROC - 0.5) and
RCE lift = RCE / oracle RCE, 1.0 meaning as good as the truth. The oracle is the one under
the run's evaluation protocol (components.datagen.eval_oracle). The last line averages the
tasks with at least `MIN_POSITIVES` eval positives (rarer tasks' metrics are mostly noise).
"""

from __future__ import annotations

import math
from typing import Any

MIN_POSITIVES = 200


def _fmt(value: Any, spec: str) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return format(float(value), spec)


def auroc_lift(auroc: float | None, oracle_auroc: float | None) -> float | None:
    """Share of the oracle's AUROC gain over chance that the model achieved."""
    if auroc is None or oracle_auroc is None or oracle_auroc <= 0.5:
        return None
    return (auroc - 0.5) / (oracle_auroc - 0.5)


def rce_lift(rce: float | None, oracle_rce: float | None) -> float | None:
    """Share of the oracle's RCE (its cross-entropy gain over the base rate) the model achieved."""
    if rce is None or oracle_rce is None or oracle_rce <= 0:
        return None
    return rce / oracle_rce


def _mean(values: list[float | None]) -> float | None:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    return sum(finite) / len(finite) if finite else None


def summary_rows(metrics: dict[str, Any], oracle: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Per task: the model's and the oracle's AUROC, RCE, calibration and both lifts."""
    oracle_tasks = (oracle or {}).get("tasks", {})
    rows = []
    for task, values in metrics["tasks"].items():
        best = oracle_tasks.get(task, {})
        rows.append({
            "task": task, "auroc": values.get("auroc"), "oracle_auroc": best.get("auroc"),
            "auroc_lift": auroc_lift(values.get("auroc"), best.get("auroc")),
            "rce": values.get("rce"), "oracle_rce": best.get("rce"),
            "rce_lift": rce_lift(values.get("rce"), best.get("rce")),
            "calibration": values.get("calibration"), "oracle_calibration": best.get("calibration"),
            "positives": int(values.get("positives") or 0), "count": int(values.get("count") or 0),
        })
    return rows


def mean_row(rows: list[dict[str, Any]], min_positives: int = MIN_POSITIVES) -> dict[str, Any]:
    """Means over the tasks with at least `min_positives` positives."""
    kept = [r for r in rows if r["positives"] >= min_positives]
    keys = ("auroc", "oracle_auroc", "auroc_lift", "rce", "oracle_rce", "rce_lift", "calibration", "oracle_calibration")
    return {"task": f"mean ({len(kept)} tasks >= {min_positives} pos.)", **{k: _mean([r[k] for r in kept]) for k in keys},
            "positives": sum(r["positives"] for r in kept), "count": max((r["count"] for r in kept), default=0)}


def summary_table(metrics: dict[str, Any], oracle: dict[str, Any] | None = None) -> str:
    """Plain-text table: task, AUROC vs oracle, lift, RCE vs oracle, RCE lift, calibration, positives/count."""
    header = ("task", "AUROC", "oracle", "lift", "RCE", "oracle RCE", "RCE lift", "calibration", "oracle cal.",
              "positives/count")
    rows = summary_rows(metrics, oracle)

    def cells(r: dict[str, Any]) -> tuple[str, ...]:
        return (r["task"], _fmt(r["auroc"], ".4f"), _fmt(r["oracle_auroc"], ".4f"), _fmt(r["auroc_lift"], ".2f"),
                _fmt(r["rce"], ".2f"), _fmt(r["oracle_rce"], ".2f"), _fmt(r["rce_lift"], ".2f"),
                _fmt(r["calibration"], ".3f"), _fmt(r["oracle_calibration"], ".3f"), f"{r['positives']}/{r['count']}")

    table = [cells(r) for r in rows]
    footer = cells(mean_row(rows)) if rows else None
    widths = [max(len(str(r[i])) for r in (header, *table, *([footer] if footer else []))) for i in range(len(header))]

    def line(row: tuple[str, ...]) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True)))

    lines = [line(header), "  ".join("-" * w for w in widths), *(line(r) for r in table)]
    if footer:
        lines += ["  ".join("-" * w for w in widths), line(footer)]
    if oracle and oracle.get("protocol"):
        p = oracle["protocol"]
        lines.append(f"oracle: best predictions under the eval protocol (split on {p['split_key']}, "
                     f"eval fraction {p['eval_fraction']}; hidden effects of IDs unseen in training integrated out)")
    gauc = (metrics.get("ranking") or {}).get("gauc")
    if gauc is not None:
        lines.append(f"ranking score GAUC (per user): {_fmt(gauc, '.4f')}")
    return "\n".join(lines)
