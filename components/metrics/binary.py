"""Streaming binary-classification metrics per task, in memory that does not grow with the data.

Every task keeps a fixed histogram over the prediction's logit (`num_bins` equal-width bins
between logit(1e-7) and logit(1 - 1e-7), the clip range the cross entropies use) plus exact
running sums. From these:
- AUROC and average precision treat examples that share a bin as tied. The AUROC error is
  bounded by half the share of positive/negative pairs that fall in one bin; that bound is
  computed from the histogram and reported (`auroc_error_bound`), so a run proves its own
  precision. Logit bins keep rare tasks (predictions near 0) as finely resolved as common ones.
- Log loss, RCE and calibration come from exact sums.
- NRCE needs the scale factor mean(label) / mean(prediction), known only at the end; it is
  computed from per-bin prediction means of positives and negatives. Within a bin (logit width
  ~0.001) the log terms vary by ~0.001, so the error is second order (far below 1e-3 RCE points).
- The confusion matrix (plain example counts, unweighted) comes from per-bin counts at a bin
  edge: the threshold asked for, or the task's base rate (weighted mean label) when none is
  given, is snapped to the nearest edge and the snapped value is reported, so the matrix is
  exact for the threshold it names. A base-rate threshold keeps rare tasks (0.1% positives)
  from an all-negative matrix at 0.5.
Weights are the downsampling weights `y/pos_rate + (1-y)/neg_rate` when configured, else 1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from components.common import storage
from components.common.errors import DataError

EPSILON = 1e-7  # predictions are clipped to [1e-7, 1 - 1e-7], as the original's RCE does
LOGIT_LIMIT = math.log((1 - EPSILON) / EPSILON)
# Which way is better for each scalar a blessing may judge (config.BlessingConfig).
DIRECTIONS: dict[str, str] = {
    "auroc": "higher", "average_precision": "higher", "rce": "higher", "nrce": "higher", "log_loss": "lower",
}


def clip_probabilities(p: np.ndarray) -> np.ndarray:
    return np.clip(p, EPSILON, 1 - EPSILON)


def binary_cross_entropy(p: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Per-example cross entropy with clipped predictions."""
    p = clip_probabilities(p)
    return -(y * np.log(p) + (1 - y) * np.log1p(-p))


def entropy_of_rate(rate: float) -> float:
    """Cross entropy of the constant predictor at `rate` (the RCE reference)."""
    rate = min(max(rate, EPSILON), 1 - EPSILON)
    return -(rate * math.log(rate) + (1 - rate) * math.log1p(-rate))


def relative_cross_entropy(cross_entropy: float, mean_label: float) -> float:
    """RCE = 100 * (1 - CE(model) / CE(constant predictor at the mean label))."""
    reference = entropy_of_rate(mean_label)
    return 100.0 * (1.0 - cross_entropy / reference)


def finite_or_none(value: Any) -> Any:
    """JSON has no NaN: undefined metrics are written as null (and read back as NaN)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite_or_none(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite_or_none(v) for v in value]
    return value


def read_task_document(uri: str, file_name: str, missing: str, missing_error: type[Exception]) -> dict[str, Any]:
    """A per-task metrics document (`{"tasks": {task: {metric: value}}, ...}`: metrics.json,
    oracle.json) given its URI or the directory holding `file_name`; a missing one raises
    `missing_error` with the `missing` explanation."""
    target = uri if uri.rstrip("/").endswith(".json") else storage.join(uri, file_name)
    try:
        data = storage.read_json(target)
    except FileNotFoundError as exc:
        raise missing_error(f"{target}: {missing}") from exc
    if not isinstance(data, dict) or not isinstance(data.get("tasks"), dict):
        raise DataError(f"{target}: not a per-task metrics document (no 'tasks' mapping)")
    return data


def weighted_sum(a: np.ndarray, b: np.ndarray) -> float:
    """sum(a * b) with numpy's own pairwise summation, not BLAS's dot: OpenBLAS splits a long dot
    across its threads, so the last bit of a metric would depend on how many threads a container
    grants it (the same run in a venv and in an image must give the same metrics)."""
    return float(np.sum(a * b))


@dataclass(frozen=True)
class CurvePoint:
    x: float
    y: float
    threshold: float


@dataclass(frozen=True)
class TaskMetrics:
    """Final metrics of one task; NaN where undefined (no positives, non-finite predictions)."""

    task: str
    auroc: float
    auroc_error_bound: float
    average_precision: float
    log_loss: float
    rce: float
    nrce: float
    calibration: float  # mean prediction / mean label; 1.0 is perfectly calibrated on average
    mean_prediction: float
    mean_label: float
    count: int
    positives: int
    weighted_count: float
    weighted_positives: float
    nonfinite_predictions: int
    threshold: float
    confusion_matrix: tuple[tuple[int, int], tuple[int, int]]  # [[tn, fp], [fn, tp]], actual x predicted
    roc: tuple[CurvePoint, ...] = field(repr=False)  # x=fpr, y=tpr
    precision_recall: tuple[CurvePoint, ...] = field(repr=False)  # x=recall, y=precision
    reliability: tuple[CurvePoint, ...] = field(repr=False)  # x=mean prediction, y=observed rate, threshold=weight share

    SCALARS = ("auroc", "auroc_error_bound", "average_precision", "log_loss", "rce", "nrce",
               "calibration", "mean_prediction", "mean_label", "count", "positives",
               "weighted_count", "weighted_positives", "nonfinite_predictions")

    def scalars(self) -> dict[str, float]:
        return {name: getattr(self, name) for name in self.SCALARS}

    def to_json(self) -> dict[str, Any]:
        def points(curve: tuple[CurvePoint, ...], x: str, y: str, t: str) -> list[dict[str, float]]:
            return [{x: round(p.x, 6), y: round(p.y, 6), t: float(f"{p.threshold:.6g}")} for p in curve]

        return {
            **self.scalars(),
            "threshold": self.threshold,
            "confusion_matrix": [list(row) for row in self.confusion_matrix],
            "curves": {
                "roc": points(self.roc, "fpr", "tpr", "threshold"),
                "precision_recall": points(self.precision_recall, "recall", "precision", "threshold"),
                "reliability": points(self.reliability, "mean_prediction", "observed_rate", "weight_share"),
            },
        }


class BinaryMetricAccumulator:
    """Streaming state of one task: a fixed logit histogram plus exact sums (see module doc)."""

    def __init__(self, task: str, num_bins: int = 32768, threshold: float | None = None,
                 curve_points: int = 200, reliability_buckets: int = 20) -> None:
        if num_bins < 2:
            raise ValueError("num_bins must be at least 2")
        self.task = task
        self.num_bins = num_bins
        self.threshold = threshold
        self.curve_points = curve_points
        self.reliability_buckets = reliability_buckets
        self.pos_weight = np.zeros(num_bins)
        self.neg_weight = np.zeros(num_bins)
        self.pos_prediction = np.zeros(num_bins)  # sum of w * p over positives, per bin
        self.neg_prediction = np.zeros(num_bins)
        self.count = 0
        self.positives = 0
        self.nonfinite = 0
        self.sum_weight = 0.0
        self.sum_weighted_label = 0.0
        self.sum_weighted_prediction = 0.0
        self.sum_weighted_cross_entropy = 0.0
        self.pos_count = np.zeros(num_bins, dtype=np.int64)  # unweighted, for the confusion matrix
        self.neg_count = np.zeros(num_bins, dtype=np.int64)

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in (self.pos_weight, self.neg_weight, self.pos_prediction,
                                      self.neg_prediction, self.pos_count, self.neg_count))

    def bin_of(self, p: np.ndarray) -> np.ndarray:
        p = clip_probabilities(p)
        logit = np.log(p) - np.log1p(-p)
        scaled = (logit + LOGIT_LIMIT) * (self.num_bins / (2 * LOGIT_LIMIT))
        return np.clip(scaled.astype(np.int64), 0, self.num_bins - 1)

    def bin_lower_edges(self) -> np.ndarray:
        """Probability at each bin's lower edge (thresholds of the ROC/PR points)."""
        logits = -LOGIT_LIMIT + np.arange(self.num_bins) * (2 * LOGIT_LIMIT / self.num_bins)
        return 1.0 / (1.0 + np.exp(-logits))

    def update(self, predictions: np.ndarray, labels: np.ndarray, weights: np.ndarray | None = None) -> None:
        p = np.asarray(predictions, dtype=np.float64).reshape(-1)
        y = np.asarray(labels, dtype=np.float64).reshape(-1)
        w = np.ones_like(p) if weights is None else np.asarray(weights, dtype=np.float64).reshape(-1)
        if not (p.shape == y.shape == w.shape):
            raise ValueError(f"{self.task}: predictions {p.shape}, labels {y.shape}, weights {w.shape} differ")
        finite = np.isfinite(p)
        if not finite.all():
            self.nonfinite += int((~finite).sum())
            p, y, w = p[finite], y[finite], w[finite]
        if p.size == 0:
            return
        bins = self.bin_of(p)
        wy, wn = w * y, w * (1 - y)
        n = self.num_bins
        self.pos_weight += np.bincount(bins, weights=wy, minlength=n)
        self.neg_weight += np.bincount(bins, weights=wn, minlength=n)
        self.pos_prediction += np.bincount(bins, weights=wy * p, minlength=n)
        self.neg_prediction += np.bincount(bins, weights=wn * p, minlength=n)
        self.count += int(p.size)
        self.positives += int((y > 0.5).sum())
        self.sum_weight += float(w.sum())
        self.sum_weighted_label += float(wy.sum())
        self.sum_weighted_prediction += float((w * p).sum())
        self.sum_weighted_cross_entropy += float((w * binary_cross_entropy(p, y)).sum())
        actual = y > 0.5
        self.pos_count += np.bincount(bins[actual], minlength=n)
        self.neg_count += np.bincount(bins[~actual], minlength=n)

    # ------------------------------------------------------------------ results

    def compute(self) -> TaskMetrics:
        nan = float("nan")
        total_pos, total_neg = float(self.pos_weight.sum()), float(self.neg_weight.sum())
        defined = self.nonfinite == 0 and self.sum_weight > 0
        mean_label = self.sum_weighted_label / self.sum_weight if self.sum_weight > 0 else nan
        mean_prediction = self.sum_weighted_prediction / self.sum_weight if defined else nan
        log_loss = self.sum_weighted_cross_entropy / self.sum_weight if defined else nan
        both_classes = defined and total_pos > 0 and total_neg > 0
        auroc, bound = self._auroc(total_pos, total_neg) if both_classes else (nan, nan)
        average_precision = self._average_precision(total_pos) if defined and total_pos > 0 else nan
        rce = relative_cross_entropy(log_loss, mean_label) if both_classes else nan
        nrce = relative_cross_entropy(self._normalized_cross_entropy(mean_label / mean_prediction), mean_label) \
            if both_classes and mean_prediction > 0 else nan
        calibration = mean_prediction / mean_label if defined and mean_label > 0 else nan
        threshold, matrix = self._confusion_matrix(mean_label)
        return TaskMetrics(
            task=self.task, auroc=auroc, auroc_error_bound=bound, average_precision=average_precision,
            log_loss=log_loss, rce=rce, nrce=nrce, calibration=calibration,
            mean_prediction=mean_prediction, mean_label=mean_label, count=self.count,
            positives=self.positives, weighted_count=self.sum_weight, weighted_positives=total_pos,
            nonfinite_predictions=self.nonfinite, threshold=threshold,
            confusion_matrix=matrix,  # type: ignore[arg-type]
            roc=self._roc_curve(total_pos, total_neg) if both_classes else (),
            precision_recall=self._precision_recall_curve(total_pos) if defined and total_pos > 0 else (),
            reliability=self._reliability() if defined else (),
        )

    def _confusion_matrix(self, mean_label: float) -> tuple[float, tuple[tuple[int, int], tuple[int, int]]]:
        """[[tn, fp], [fn, tp]] predicting positive from the bin edge nearest the threshold up."""
        wanted = self.threshold if self.threshold is not None else mean_label
        if not math.isfinite(wanted):
            wanted = 0.5
        p = min(max(wanted, EPSILON), 1 - EPSILON)
        edge = (math.log(p / (1 - p)) + LOGIT_LIMIT) * (self.num_bins / (2 * LOGIT_LIMIT))
        k = min(max(round(edge), 0), self.num_bins)
        snapped = float(self.bin_lower_edges()[k]) if k < self.num_bins else 1.0
        tn, fp = int(self.neg_count[:k].sum()), int(self.neg_count[k:].sum())
        fn, tp = int(self.pos_count[:k].sum()), int(self.pos_count[k:].sum())
        return snapped, ((tn, fp), (fn, tp))

    def _auroc(self, total_pos: float, total_neg: float) -> tuple[float, float]:
        """Pairs in one bin count as ties (1/2); the error is at most half their share."""
        neg_below = np.cumsum(self.neg_weight) - self.neg_weight
        pairs = total_pos * total_neg
        same_bin = weighted_sum(self.pos_weight, self.neg_weight) / pairs
        auroc = weighted_sum(self.pos_weight, neg_below + 0.5 * self.neg_weight) / pairs
        return auroc, 0.5 * same_bin

    def _descending(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Occupied bins from the highest score down, with cumulative positive/total weight."""
        occupied = np.nonzero((self.pos_weight + self.neg_weight) > 0)[0][::-1]
        tp = np.cumsum(self.pos_weight[occupied])
        total = np.cumsum(self.pos_weight[occupied] + self.neg_weight[occupied])
        return occupied, tp, total

    def _average_precision(self, total_pos: float) -> float:
        """Sum over thresholds of recall increase times precision (scikit-learn's definition)."""
        occupied, tp, total = self._descending()
        precision = tp / total
        return weighted_sum(self.pos_weight[occupied] / total_pos, precision)

    def _normalized_cross_entropy(self, scale: float) -> float:
        """Cross entropy after multiplying predictions by `scale`, from per-bin prediction means."""
        total = 0.0
        for weight, prediction, positive in ((self.pos_weight, self.pos_prediction, True),
                                             (self.neg_weight, self.neg_prediction, False)):
            occupied = weight > 0
            mean = clip_probabilities(scale * prediction[occupied] / weight[occupied])
            log_term = np.log(mean) if positive else np.log1p(-mean)
            total -= weighted_sum(weight[occupied], log_term)
        return total / self.sum_weight

    def _roc_curve(self, total_pos: float, total_neg: float) -> tuple[CurvePoint, ...]:
        occupied, tp, total = self._descending()
        tpr, fpr = tp / total_pos, (total - tp) / total_neg
        thresholds = self.bin_lower_edges()[occupied]
        keep = _spread(fpr + tpr, 2.0, self.curve_points)
        return (CurvePoint(0.0, 0.0, 1.0),) + tuple(
            CurvePoint(float(fpr[i]), float(tpr[i]), float(thresholds[i])) for i in keep)

    def _precision_recall_curve(self, total_pos: float) -> tuple[CurvePoint, ...]:
        occupied, tp, total = self._descending()
        recall, precision = tp / total_pos, tp / total
        thresholds = self.bin_lower_edges()[occupied]
        keep = _spread(recall + np.linspace(0, 1, len(recall)), 2.0, self.curve_points)
        return tuple(CurvePoint(float(recall[i]), float(precision[i]), float(thresholds[i])) for i in keep)

    def _reliability(self) -> tuple[CurvePoint, ...]:
        """Reliability diagram: bins merged into buckets of equal weight, low scores first."""
        weight = self.pos_weight + self.neg_weight
        share = np.cumsum(weight) / weight.sum()
        bucket = np.minimum((share * self.reliability_buckets - 1e-9).astype(np.int64),
                            self.reliability_buckets - 1)
        bucket = np.maximum(bucket, 0)
        n = self.reliability_buckets
        bucket_weight = np.bincount(bucket, weights=weight, minlength=n)
        bucket_prediction = np.bincount(bucket, weights=self.pos_prediction + self.neg_prediction, minlength=n)
        bucket_positive = np.bincount(bucket, weights=self.pos_weight, minlength=n)
        points = []
        for b in np.nonzero(bucket_weight > 0)[0]:
            points.append(CurvePoint(float(bucket_prediction[b] / bucket_weight[b]),
                                     float(bucket_positive[b] / bucket_weight[b]),
                                     float(bucket_weight[b] / weight.sum())))
        return tuple(points)


def _spread(progress: np.ndarray, span: float, max_points: int) -> np.ndarray:
    """Indices of at most ~max_points points evenly spaced along a monotone `progress` (last kept)."""
    if len(progress) == 0:
        return np.zeros(0, dtype=np.int64)
    step = np.floor(progress * (max_points - 1) / span).astype(np.int64)
    first_of_step = np.concatenate(([True], step[1:] != step[:-1]))
    keep = np.nonzero(first_of_step)[0]
    if keep[-1] != len(progress) - 1:
        keep = np.append(keep, len(progress) - 1)
    return keep
