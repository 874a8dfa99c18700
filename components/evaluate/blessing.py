"""Blessing: is the new model good enough to replace the one in production?

Blessed when every metric is a number (no NaN), no task's AUROC is more than
`auroc_tolerance` below the baseline's (the production model's metrics.json), and every
configured absolute floor is met. Each task gets a verdict with its reasons, so a refusal
says which task failed and by how much. The step exits 0 either way; the pipeline branches
on `blessed` in blessing.json.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from components.common import storage
from components.common.errors import DataError, StorageError
from components.evaluate.config import BlessingConfig
from components.evaluate.constants import METRICS_FILE
from components.metrics.binary import finite_or_none

NAN_CHECKED = ("auroc", "average_precision", "log_loss", "rce", "nrce", "calibration")


@dataclass(frozen=True)
class TaskVerdict:
    task: str
    passed: bool
    reasons: tuple[str, ...]
    auroc: float
    baseline_auroc: float | None
    auroc_delta: float | None


@dataclass(frozen=True)
class Blessing:
    blessed: bool
    reason: str
    baseline_uri: str | None
    auroc_tolerance: float
    tasks: tuple[TaskVerdict, ...]

    def to_json(self) -> dict[str, Any]:
        """blessing.json's content: tasks keyed by name, NaN as null, so strict JSON can write it."""
        data = asdict(self)
        data["tasks"] = {v.task: {k: x for k, x in asdict(v).items() if k != "task"} for v in self.tasks}
        return finite_or_none(data)


def as_float(value: Any) -> float:
    """JSON null (how NaN is written) and missing values read back as NaN."""
    return float("nan") if value is None else float(value)


def read_baseline(uri: str) -> dict[str, Any]:
    """A baseline is a previous evaluation's metrics.json, or the directory holding it."""
    target = uri if uri.endswith(".json") else storage.join(uri, METRICS_FILE)
    try:
        data = storage.read_json(target)
    except FileNotFoundError as exc:
        raise StorageError(f"{target}: baseline metrics not found") from exc
    if not isinstance(data, dict) or not isinstance(data.get("tasks"), dict):
        raise DataError(f"{target}: not a recap metrics file (no 'tasks' mapping)")
    return data


def _task_verdict(task: str, values: dict[str, Any], baseline: dict[str, Any] | None,
                  config: BlessingConfig) -> TaskVerdict:
    failures: list[str] = []
    notes: list[str] = []
    for name in NAN_CHECKED:
        if math.isnan(as_float(values.get(name))):
            failures.append(f"{name} is NaN")
    auroc = as_float(values.get("auroc"))
    baseline_auroc = delta = None
    if baseline is not None:
        base_task = baseline["tasks"].get(task)
        if base_task is None:
            notes.append("no baseline for this task")
        elif math.isnan(as_float(base_task.get("auroc"))):
            notes.append("baseline AUROC is NaN: not compared")
        else:
            baseline_auroc = as_float(base_task["auroc"])
            delta = auroc - baseline_auroc
            if not math.isnan(delta) and delta < -config.auroc_tolerance:
                failures.append(f"auroc {auroc:.4f} is {-delta:.4f} below baseline {baseline_auroc:.4f} "
                                f"(tolerance {config.auroc_tolerance})")
            elif not math.isnan(delta):
                notes.append(f"auroc {auroc:.4f} vs baseline {baseline_auroc:.4f} ({delta:+.4f})")
    floors = {**config.floors, **config.task_floors.get(task, {})}
    for metric, floor in sorted(floors.items()):
        value = as_float(values.get(metric))
        if not math.isnan(value) and value < floor:
            failures.append(f"{metric} {value:.4f} is below the floor {floor}")
        elif not math.isnan(value):
            notes.append(f"{metric} {value:.4f} >= floor {floor}")
    return TaskVerdict(task, not failures, tuple(failures or notes or ["metrics finite; no baseline or floor to compare"]),
                       auroc, baseline_auroc, delta)


def bless(metrics: dict[str, Any], config: BlessingConfig, baseline: dict[str, Any] | None = None,
          baseline_uri: str | None = None) -> Blessing:
    """Judge `metrics` (metrics.json content) against a baseline and/or absolute floors."""
    verdicts = tuple(_task_verdict(task, values, baseline, config)
                     for task, values in metrics["tasks"].items())
    failed = [v for v in verdicts if not v.passed]
    ranking = metrics.get("ranking") or {}
    ranking_nan = bool(ranking) and math.isnan(as_float(ranking.get("gauc")))
    if failed or ranking_nan:
        parts = [f"{v.task}: {'; '.join(v.reasons)}" for v in failed]
        if ranking_nan:
            parts.append("ranking: gauc is NaN")
        reason = "not blessed: " + " | ".join(parts)
    elif baseline is not None:
        reason = f"blessed: no task's AUROC is more than {config.auroc_tolerance} below the baseline"
    elif config.floors or config.task_floors:
        reason = "blessed: every floor met (no baseline given)"
    else:
        reason = "blessed: no baseline and no floors configured; only NaN checks applied"
    return Blessing(not failed and not ranking_nan, reason, baseline_uri, config.auroc_tolerance, verdicts)
