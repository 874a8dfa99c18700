"""Drift: distances between this run's statistics and a reference run's (both JSON).

- binary elements, discrete codes and labels: L-infinity distance between the category
  distributions (the largest change in any category's share), as TFDV does;
- float elements (continuous, embeddings): Jensen-Shannon divergence between the fixed
  log-scale histograms (zeros and NaN/inf have their own bins, so their shares count too).

Elements with fewer than `min_count` values on either side are not judged.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from components.validate import histogram as H
from components.validate.anomalies import Anomaly, make
from components.validate.config import ValidationConfig

PLOT_ELEMENTS = 20


@dataclass
class ColumnDrift:
    column: str
    measure: str  # "linf" or "js"
    threshold: float
    distances: np.ndarray  # per element, NaN where not judged
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def judged(self) -> np.ndarray:
        return np.nan_to_num(self.distances, nan=-1.0)

    @property
    def max(self) -> float:
        return float(np.nanmax(self.distances)) if np.isfinite(self.distances).any() else 0.0

    def to_json(self) -> dict[str, Any]:
        order = np.argsort(-self.judged, kind="stable")[:PLOT_ELEMENTS]
        return {"measure": self.measure, "threshold": self.threshold, "max": self.max,
                "elements_over": int((self.judged > self.threshold).sum()),
                "top": [{"element": int(i), "distance": float(self.distances[i])} for i in order
                        if np.isfinite(self.distances[i])], **self.detail}


def _shares(counts: np.ndarray) -> np.ndarray:
    return counts / np.maximum(counts.sum(axis=-1, keepdims=True), 1)


def _numeric(cur: dict, ref: dict, config: ValidationConfig) -> np.ndarray:
    a, b = H.from_sparse(cur["histograms"]), H.from_sparse(ref["histograms"])
    js = H.jensen_shannon(a.astype(np.float64), b.astype(np.float64))
    enough = (a.sum(axis=1) >= config.drift.min_count) & (b.sum(axis=1) >= config.drift.min_count)
    return np.where(enough, js, np.nan)


def _binary(cur: dict, ref: dict, config: ValidationConfig) -> np.ndarray:
    def rate(stats: dict) -> tuple[np.ndarray, np.ndarray]:
        count = np.asarray(stats["elements"]["count"], dtype=np.float64)
        return np.asarray(stats["elements"]["ones"]) / np.maximum(count, 1), count

    (p, n), (q, m) = rate(cur), rate(ref)
    enough = (n >= config.drift.min_count) & (m >= config.drift.min_count)
    return np.where(enough, np.abs(p - q), np.nan)


def _discrete(cur: dict, ref: dict, config: ValidationConfig) -> np.ndarray:
    a, b = np.asarray(cur["value_counts"], dtype=np.float64), np.asarray(ref["value_counts"], dtype=np.float64)
    linf = np.abs(_shares(a) - _shares(b)).max(axis=1)
    enough = (a.sum(axis=1) >= config.drift.min_count) & (b.sum(axis=1) >= config.drift.min_count)
    return np.where(enough, linf, np.nan)


def _label(cur: dict, ref: dict, config: ValidationConfig) -> np.ndarray:
    def rate(stats: dict) -> tuple[float, int]:
        s = stats["summary"]
        total = s["positives"] + s["negatives"]
        return (s["positives"] / total if total else np.nan), total

    (p, n), (q, m) = rate(cur), rate(ref)
    enough = n >= config.drift.min_count and m >= config.drift.min_count
    return np.array([abs(p - q) if enough else np.nan])


_MEASURES = {"numeric": ("js", _numeric), "binary": ("linf", _binary), "discrete": ("linf", _discrete),
             "label": ("linf", _label)}


def compare(statistics: dict[str, Any], reference: dict[str, Any],
            config: ValidationConfig) -> tuple[list[ColumnDrift], list[Anomaly]]:
    """Per-column drift and the anomalies it raises (plus `reference_mismatch` when schemas differ)."""
    drifts: list[ColumnDrift] = []
    anomalies: list[Anomaly] = []
    skipped = []
    for column, cur in statistics["columns"].items():
        ref = reference.get("columns", {}).get(column)
        if cur["kind"] not in _MEASURES or not cur.get("read", True):
            continue
        if ref is None or ref.get("kind") != cur["kind"] or ref.get("length") != cur["length"] or not ref.get("read", True):
            skipped.append(column)
            continue
        measure, fn = _MEASURES[cur["kind"]]
        threshold = config.drift.numeric_js_max if measure == "js" else (
            config.drift.label_linf_max if cur["kind"] == "label" else config.drift.categorical_linf_max)
        try:
            distances = fn(cur, ref, config)
        except (KeyError, TypeError, ValueError, IndexError):  # a reference from an older/other format
            skipped.append(column)
            continue
        drift = ColumnDrift(column, measure, threshold, distances)
        drifts.append(drift)
        over = np.flatnonzero(drift.judged > threshold)
        if len(over):
            worst = over[np.argsort(-drift.distances[over], kind="stable")][:10]
            code = "drift_numeric" if measure == "js" else "drift_categorical"
            name = "Jensen-Shannon divergence" if measure == "js" else "L-infinity distance"
            where = "" if cur["length"] == 1 else f" in {len(over)} of {cur['length']} elements"
            message = (f"column {column}: {name} to the reference above {threshold:g}{where} "
                       f"(max {drift.max:.4f}" + ("" if cur["length"] == 1 else f" at element {int(worst[0])}") + ")")
            anomalies.append(make(code, column, len(over), message, config.severity,
                                  details={"measure": measure, "threshold": threshold, "max": drift.max,
                                           "elements": [int(i) for i in worst],
                                           "distances": [round(float(drift.distances[i]), 6) for i in worst]}))
    if reference.get("schema_hash") != statistics.get("schema_hash") or skipped:
        anomalies.append(make("reference_mismatch", None, len(skipped),
                              f"reference statistics are for schema {reference.get('schema')!r} "
                              f"(hash {reference.get('schema_hash')}); drift not checked for "
                              f"{len(skipped)} column(s): {', '.join(skipped[:10]) or 'none'}",
                              config.severity, details={"skipped_columns": skipped}))
    return drifts, anomalies
