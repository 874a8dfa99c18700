"""Anomaly rules over finished statistics (JSON) and the row-level findings from streaming.

Rules read the statistics JSON, the same document users see and the next run takes as
its reference, so a rule never depends on accumulator internals.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from components.common.contract import allowed_non_finite_share
from components.validate.anomalies import Anomaly, Findings, make
from components.validate.config import ValidationConfig

TOP_ELEMENTS = 10


def wilson_interval(positives: int, total: int, z: float) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion: honest for rates near 0 and small totals."""
    if total <= 0:
        return 0.0, 1.0
    p = positives / total
    denominator = 1 + z * z / total
    center = (p + z * z / (2 * total)) / denominator
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / denominator
    return max(0.0, center - half), min(1.0, center + half)


def _elements(indices: np.ndarray, values: np.ndarray | None = None) -> list[Any]:
    """The first few flagged elements (worst first when `values` is given)."""
    if values is not None:
        indices = indices[np.argsort(-values[indices], kind="stable")]
    return [int(i) for i in indices[:TOP_ELEMENTS]]


def non_finite_rule(column: str, stats: dict[str, Any], config: ValidationConfig,
                    findings: Findings) -> list[Anomaly]:
    e = stats["elements"]
    count = np.asarray(e["count"], dtype=np.float64)
    bad = np.asarray(e["nan"]) + np.asarray(e["posinf"]) + np.asarray(e["neginf"])
    share = np.where(count > 0, bad / np.maximum(count, 1), 0.0)
    allowed = allowed_non_finite_share(stats["role"], config.max_non_finite_share)
    flagged = np.flatnonzero(share > allowed)
    if not len(flagged):
        return []
    worst = _elements(flagged, share)
    message = (f"column {column}: {len(flagged)} element(s) with NaN/inf share above "
               f"{allowed:g} (worst: element {worst[0]} at {share[worst[0]]:.2%})")
    return [make("non_finite", column, int(bad[flagged].sum()), message, config.severity,
                 findings.samples.get(("non_finite", column), []),
                 {"elements": worst, "shares": [round(float(share[i]), 6) for i in worst],
                  "elements_flagged": len(flagged)})]


def constant_rule(column: str, stats: dict[str, Any], config: ValidationConfig) -> list[Anomaly]:
    kind = stats["kind"]
    if kind == "label":
        return []  # a label's rate has its own rule
    if kind == "id":
        s = stats["summary"]
        rows = s["rows"] - s["null_rows"]
        if rows >= config.constant_min_rows and s["min"] is not None and s["min"] == s["max"]:
            return [make("constant_column", column, rows, f"column {column}: every row has ID {s['min']}",
                         config.severity, details={"value": s["min"]})]
        return []
    e = stats["elements"]
    count = np.asarray(e["count"], dtype=np.float64)
    if kind == "binary":
        ones = np.asarray(e["ones"])
        constant = (ones == 0) | (ones == count)
    elif kind == "numeric":
        low = np.array([np.nan if v is None else v for v in e["min"]], dtype=np.float64)
        high = np.array([np.nan if v is None else v for v in e["max"]], dtype=np.float64)
        constant = (low == high) & (np.asarray(e["finite"]) == count)
    else:
        low = np.array([np.nan if v is None else v for v in e["min"]], dtype=np.float64)
        high = np.array([np.nan if v is None else v for v in e["max"]], dtype=np.float64)
        constant = low == high
    flagged = np.flatnonzero(constant & (count >= config.constant_min_rows))
    if not len(flagged):
        return []
    elements = _elements(flagged)
    what = "the whole column" if len(flagged) == len(count) else f"{len(flagged)} of {len(count)} elements"
    return [make("constant_column", column, len(flagged), f"column {column}: {what} constant (e.g. element "
                 f"{elements[0]})", config.severity, details={"elements": elements, "elements_flagged": len(flagged)})]


def positive_rate_rule(column: str, stats: dict[str, Any], config: ValidationConfig) -> list[Anomaly]:
    s = stats["summary"]
    total = s["positives"] + s["negatives"]
    if not total:
        return []
    bounds = config.rate_bounds(column)
    low, high = wilson_interval(s["positives"], total, config.positive_rate_z)
    if high >= bounds.min and low <= bounds.max:
        return []
    rate = s["positives"] / total
    message = (f"column {column}: positive rate {rate:.4%} ({s['positives']}/{total}) is outside "
               f"[{bounds.min:g}, {bounds.max:g}] (Wilson interval at z={config.positive_rate_z:g}: "
               f"[{low:.3g}, {high:.3g}])")
    return [make("positive_rate_out_of_bounds", column, total, message, config.severity,
                 details={"positive_rate": rate, "min": bounds.min, "max": bounds.max,
                          "interval": [low, high]})]


def missing_share_filter(anomalies: list[Anomaly], statistics: dict[str, Any],
                         config: ValidationConfig) -> list[Anomaly]:
    """Keep `missing_values` findings only where the null share exceeds the configured maximum."""
    kept = []
    for anomaly in anomalies:
        if anomaly.code == "missing_values" and anomaly.column in statistics["columns"]:
            summary = statistics["columns"][anomaly.column]["summary"]
            rows = max(summary["rows"], 1)
            share = summary["null_rows"] / rows
            values = max(summary.get("values", 0) + summary.get("null_values", 0), 1)
            if max(share, summary.get("null_values", 0) / values) <= config.max_missing_share:
                continue
        kept.append(anomaly)
    return kept


def statistics_rules(statistics: dict[str, Any], config: ValidationConfig, findings: Findings) -> list[Anomaly]:
    out: list[Anomaly] = []
    for column, stats in statistics["columns"].items():
        if not stats.get("read", True):
            continue
        if stats["kind"] == "numeric":
            out += non_finite_rule(column, stats, config, findings)
        if stats["kind"] == "label":
            out += positive_rate_rule(column, stats, config)
        out += constant_rule(column, stats, config)
    return out
