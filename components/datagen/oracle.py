"""The oracle: how well the true probabilities themselves score, per task.

A trained model is judged against this ceiling (AUROC, log loss). Both are accumulated in
streaming form so memory stays flat however many rows are generated: log loss is a sum,
AUROC comes from fine histograms of the true logit for positives and negatives (ties
within a bin count one half; with 8192 bins over the logit range the error is ~1e-4).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from components.common import storage
from components.common.errors import DataError
from components.datagen.constants import ORACLE_FILE

_LOGIT_RANGE = (-20.0, 12.0)
_BINS = 8192
_EPS = 1e-12


class OracleAccumulator:
    """Streaming AUROC, log loss and positive rate of true probabilities, one per label."""

    def __init__(self, labels: list[str] | tuple[str, ...]) -> None:
        self.labels = tuple(labels)
        self.pos_hist = np.zeros((len(labels), _BINS), dtype=np.int64)
        self.neg_hist = np.zeros((len(labels), _BINS), dtype=np.int64)
        self.log_loss_sum = np.zeros(len(labels))
        self.count = 0

    def add(self, labels: np.ndarray, probabilities: np.ndarray) -> None:
        """labels [R, L] in {0, 1}; probabilities [R, L] true P(y=1)."""
        p = np.clip(probabilities, _EPS, 1 - _EPS)
        y = labels.astype(bool)
        self.log_loss_sum -= np.where(y, np.log(p), np.log1p(-p)).sum(axis=0)
        logit = np.log(p) - np.log1p(-p)
        lo, hi = _LOGIT_RANGE
        bins = ((logit - lo) * (_BINS / (hi - lo))).astype(np.int64).clip(0, _BINS - 1)
        offsets = np.arange(len(self.labels)) * _BINS
        flat = (bins + offsets).ravel()
        size = len(self.labels) * _BINS
        self.pos_hist += np.bincount(flat[y.ravel()], minlength=size).reshape(self.pos_hist.shape)
        self.neg_hist += np.bincount(flat[~y.ravel()], minlength=size).reshape(self.neg_hist.shape)
        self.count += labels.shape[0]

    def task(self, index: int) -> dict[str, Any]:
        pos, neg = self.pos_hist[index], self.neg_hist[index]
        positives = int(pos.sum())
        negatives = int(neg.sum())
        count = positives + negatives
        auroc = float("nan")
        if positives and negatives:
            negatives_below = np.cumsum(neg) - neg  # negatives in strictly lower bins
            auroc = float((pos * (negatives_below + 0.5 * neg)).sum() / (positives * negatives))
        rate = positives / count if count else float("nan")
        log_loss = float(self.log_loss_sum[index] / count) if count else float("nan")
        base = _entropy(rate)
        return {
            "auroc": _finite_or_none(auroc),
            "log_loss": _finite_or_none(log_loss),
            "positive_rate": _finite_or_none(rate),
            "positives": positives,
            "count": count,
            # RCE of the oracle: 100 * (1 - CE / CE of the constant base-rate predictor)
            "rce": _finite_or_none(100 * (1 - log_loss / base)) if base > 0 else None,
        }

    def to_json(self, schema_name: str, seed: int, task_labels: list[str], shift: float) -> dict[str, Any]:
        tasks = {name: self.task(i) for i, name in enumerate(self.labels) if name in task_labels}
        others = {name: self.task(i) for i, name in enumerate(self.labels) if name not in task_labels}
        return {"schema": schema_name, "seed": seed, "rows": self.count, "shift": shift,
                "tasks": tasks, "other_labels": others}


def _finite_or_none(value: float) -> float | None:
    """JSON has no NaN: an undefined metric (no positives) is null."""
    return float(value) if np.isfinite(value) else None


def _entropy(rate: float) -> float:
    if not 0 < rate < 1:
        return 0.0
    return float(-(rate * np.log(rate) + (1 - rate) * np.log(1 - rate)))


def read_oracle(uri: str) -> dict[str, Any]:
    """Load `oracle.json` given its URI or the dataset directory that holds it."""
    target = uri if uri.rstrip("/").endswith(".json") else storage.join(uri, ORACLE_FILE)
    try:
        data = storage.read_json(target)
    except FileNotFoundError as exc:
        raise DataError(f"{target}: no oracle (was this data made by `recap data generate`?)") from exc
    if not isinstance(data, dict) or not isinstance(data.get("tasks"), dict):
        raise DataError(f"{target}: malformed oracle, expected a mapping with 'tasks'")
    return data
