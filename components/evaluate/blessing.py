"""Blessing: is the new model good enough to replace the one in production?

Blessed when every metric is a number (no NaN), no task is worse than the baseline (the
production model's metrics.json) by more than the configured tolerance in any compared metric
(AUROC by default; any of DIRECTIONS, each with its direction), and every configured bound
holds. Each task gets a verdict with its reasons, so a refusal says which task failed and by
how much. The step exits 0 either way; push checks `blessed` in blessing.json.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from components.common.errors import StorageError
from components.evaluate.config import BlessingConfig
from components.evaluate.constants import METRICS_FILE
from components.metrics.binary import finite_or_none, read_task_document

NAN_CHECKED = ("auroc", "average_precision", "log_loss", "rce", "nrce", "calibration")


@dataclass(frozen=True)
class Comparison:
    """One metric of one task against the baseline; improvement > 0 is better, whatever the direction."""

    metric: str
    value: float
    baseline: float | None
    improvement: float | None


@dataclass(frozen=True)
class TaskVerdict:
    task: str
    passed: bool
    reasons: tuple[str, ...]
    comparisons: tuple[Comparison, ...]


@dataclass(frozen=True)
class Blessing:
    blessed: bool
    reason: str
    baseline_uri: str | None
    criteria: dict[str, Any]  # the blessing config applied, with each compared metric's direction
    tasks: tuple[TaskVerdict, ...]

    def to_json(self) -> dict[str, Any]:
        """blessing.json's content: tasks and comparisons keyed by name, NaN as null (strict JSON)."""
        data = asdict(self)
        data["tasks"] = {
            v.task: {"passed": v.passed, "reasons": list(v.reasons),
                     "baseline": {c.metric: {k: x for k, x in asdict(c).items() if k != "metric"}
                                  for c in v.comparisons}}
            for v in self.tasks
        }
        return finite_or_none(data)


def as_float(value: Any) -> float:
    """JSON null (how NaN is written) and missing values read back as NaN."""
    return float("nan") if value is None else float(value)


def read_baseline(uri: str) -> dict[str, Any]:
    """A baseline is a previous evaluation's metrics.json, or the directory holding it."""
    return read_task_document(uri, METRICS_FILE, "baseline metrics not found", StorageError)


def _compare(metric: str, values: dict[str, Any], base_task: dict[str, Any], config: BlessingConfig,
             failures: list[str], notes: list[str]) -> Comparison:
    value, base = as_float(values.get(metric)), as_float(base_task.get(metric))
    if math.isnan(base):
        notes.append(f"baseline {metric} is NaN: not compared")
        return Comparison(metric, value, None, None)
    sign = 1.0 if config.direction(metric) == "higher" else -1.0
    improvement = sign * (value - base)
    tolerance = config.baseline[metric].tolerance
    if not math.isnan(improvement) and improvement < -tolerance:
        side = "below" if sign > 0 else "above"
        failures.append(f"{metric} {value:.4f} is {-improvement:.4f} {side} baseline {base:.4f} "
                        f"(tolerance {tolerance})")
    elif not math.isnan(improvement):
        notes.append(f"{metric} {value:.4f} vs baseline {base:.4f} ({value - base:+.4f})")
    return Comparison(metric, value, base, improvement)


def _task_verdict(task: str, values: dict[str, Any], baseline: dict[str, Any] | None,
                  config: BlessingConfig) -> TaskVerdict:
    failures: list[str] = []
    notes: list[str] = []
    for name in NAN_CHECKED:
        if math.isnan(as_float(values.get(name))):
            failures.append(f"{name} is NaN")
    comparisons: list[Comparison] = []
    if baseline is not None:
        base_task = baseline["tasks"].get(task)
        if base_task is None:
            notes.append("no baseline for this task")
        else:
            comparisons = [_compare(metric, values, base_task, config, failures, notes) for metric in config.baseline]
    bounds = {**config.bounds, **config.task_bounds.get(task, {})}
    for metric, bound in sorted(bounds.items()):
        value = as_float(values.get(metric))
        if math.isnan(value):
            continue
        if bound.min is not None and value < bound.min:
            failures.append(f"{metric} {value:.4f} is below the minimum {bound.min}")
        elif bound.max is not None and value > bound.max:
            failures.append(f"{metric} {value:.4f} is above the maximum {bound.max}")
        else:
            notes.append(f"{metric} {value:.4f} within [{bound.min}, {bound.max}]")
    return TaskVerdict(task, not failures,
                       tuple(failures or notes or ["metrics finite; no baseline or bound to compare"]),
                       tuple(comparisons))


def bless(metrics: dict[str, Any], config: BlessingConfig, baseline: dict[str, Any] | None = None,
          baseline_uri: str | None = None) -> Blessing:
    """Judge `metrics` (metrics.json content) against a baseline and/or absolute bounds."""
    verdicts = tuple(_task_verdict(task, values, baseline, config)
                     for task, values in metrics["tasks"].items())
    failed = [v for v in verdicts if not v.passed]
    ranking = metrics.get("ranking") or {}
    ranking_nan = bool(ranking) and math.isnan(as_float(ranking.get("gauc")))
    compared = ", ".join(f"{metric} by more than {c.tolerance}" for metric, c in config.baseline.items())
    if failed or ranking_nan:
        parts = [f"{v.task}: {'; '.join(v.reasons)}" for v in failed]
        if ranking_nan:
            parts.append("ranking: gauc is NaN")
        reason = "not blessed: " + " | ".join(parts)
    elif baseline is not None and config.baseline:
        reason = f"blessed: no task is worse than the baseline in {compared}"
    elif config.bounds or config.task_bounds:
        reason = "blessed: every bound met" + ("" if baseline is not None else " (no baseline given)")
    else:
        reason = "blessed: no baseline comparison and no bounds configured; only NaN checks applied"
    criteria = {**config.model_dump(mode="json", exclude_none=True),
                "baseline": {m: {"tolerance": c.tolerance, "direction": config.direction(m)}
                             for m, c in config.baseline.items()}}
    return Blessing(not failed and not ranking_nan, reason, baseline_uri, criteria, verdicts)
