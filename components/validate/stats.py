"""Streaming statistics per column of the raw contract, one accumulator per schema role.

Each accumulator takes numpy blocks (a [rows, length] array for a feature group, a 1-D
array for an ID or label), keeps fixed-size state (per-element sums, histograms, sketches),
and serializes to JSON. That JSON is also the reference format for drift: `drift.py`
compares two statistics files, never live accumulators. Row-level problems (label 2,
negative ID, binary 3) are counted with examples in `Findings` as the data streams by.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from components.common.contract import domain_breach
from components.common.schema import FeatureSpec, Role
from components.validate import histogram as H
from components.validate.anomalies import Findings
from components.validate.sketches import HyperLogLog, TopIds

QUANTILES = (0.01, 0.25, 0.5, 0.75, 0.99)
DISCRETE_VALUES = 64  # codes 0..63 are counted one by one; negatives and >= 64 in two more buckets


@dataclass
class Where:
    """Where a block comes from, for examples: the file, and each block row's row index in it."""

    file: str
    first_row: int
    findings: Findings
    row_index: np.ndarray | None = None  # set when rows were dropped (nulls, wrong lengths)

    def rows(self, block_rows: np.ndarray) -> np.ndarray:
        block_rows = block_rows[: self.findings.max_examples]
        if self.row_index is not None:
            return self.row_index[block_rows]
        return self.first_row + block_rows


def _num(value: float) -> float | None:
    """JSON-safe float: NaN/inf become null."""
    value = float(value)
    return value if np.isfinite(value) else None


def _nums(values: np.ndarray) -> list[float | None]:
    return [v if np.isfinite(v) else None for v in np.asarray(values, dtype=np.float64).tolist()]


class NumericGroupStats:
    """A float group (continuous, embeddings): per-element moments, extremes, log-scale histograms."""

    kind = "numeric"

    def __init__(self, spec: FeatureSpec) -> None:
        n = spec.length
        self.spec = spec
        self.rows = 0
        self.null_rows = 0
        self.null_values = 0
        self.hist = np.zeros((n, H.NUM_BINS), dtype=np.int64)
        self.pivot: np.ndarray | None = None  # per-element shift: keeps float32 sums of squares precise
        self.sum = np.zeros(n)
        self.sumsq = np.zeros(n)
        self.min = np.full(n, np.inf)
        self.max = np.full(n, -np.inf)
        self.nan = np.zeros(n, dtype=np.int64)
        self.posinf = np.zeros(n, dtype=np.int64)
        self.neginf = np.zeros(n, dtype=np.int64)

    def add(self, x: np.ndarray, where: Where) -> None:
        if not len(x):
            return
        x = np.ascontiguousarray(x, dtype=np.float32)
        self.rows += x.shape[0]
        hist = H.histogram_rows(x)
        self.hist += hist
        if self.pivot is None:
            with np.errstate(all="ignore"):
                mean = np.mean(x, axis=0, where=np.isfinite(x), dtype=np.float64)
            self.pivot = np.nan_to_num(mean, posinf=0.0, neginf=0.0).astype(np.float32)
        with np.errstate(all="ignore"):
            centered = x - self.pivot
            sums = centered.sum(axis=0, dtype=np.float32).astype(np.float64)
            squares = np.einsum("ij,ij->j", centered, centered).astype(np.float64)
            low = np.fmin.reduce(x, axis=0).astype(np.float64)
            high = np.fmax.reduce(x, axis=0).astype(np.float64)
        # Columns with NaN/inf (or float32 overflow) are recomputed exactly in float64; they are few.
        redo = np.flatnonzero((hist[:, H.NON_FINITE] > 0) | ~np.isfinite(sums) | ~np.isfinite(squares))
        if len(redo):
            block = x[:, redo].astype(np.float64)
            finite = np.isfinite(block)
            self.nan[redo] += np.isnan(block).sum(axis=0)
            self.posinf[redo] += (block == np.inf).sum(axis=0)
            self.neginf[redo] += (block == -np.inf).sum(axis=0)
            shifted = np.where(finite, block - self.pivot[redo], 0.0)
            sums[redo] = shifted.sum(axis=0)
            squares[redo] = (shifted * shifted).sum(axis=0)
            low[redo] = np.where(finite, block, np.inf).min(axis=0)
            high[redo] = np.where(finite, block, -np.inf).max(axis=0)
            first_bad = np.flatnonzero(~finite.all(axis=1))
            where.findings.sample("non_finite", self.spec.column, where.file,
                                  where.rows(first_bad))
        self.sum += sums
        self.sumsq += squares
        self.min = np.fmin(self.min, low)
        self.max = np.fmax(self.max, high)

    def element_arrays(self) -> dict[str, np.ndarray]:
        non_finite = self.nan + self.posinf + self.neginf
        finite = self.rows - non_finite
        safe = np.maximum(finite, 1)
        mean_shift = self.sum / safe
        pivot = self.pivot if self.pivot is not None else np.zeros_like(self.sum)
        mean = np.where(finite > 0, pivot + mean_shift, np.nan)
        std = np.where(finite > 0, np.sqrt(np.maximum(self.sumsq / safe - mean_shift**2, 0.0)), np.nan)
        return {
            "count": np.full(len(self.sum), self.rows), "finite": finite, "nan": self.nan,
            "posinf": self.posinf, "neginf": self.neginf, "zeros": self.hist[:, H.ZERO],
            "min": np.where(finite > 0, self.min, np.nan), "max": np.where(finite > 0, self.max, np.nan),
            "mean": mean, "std": std,
        }

    def to_json(self) -> dict[str, Any]:
        e = self.element_arrays()
        values = self.rows * len(self.sum)
        finite_total = int(e["finite"].sum())
        non_finite = int(values - finite_total)
        group_hist = self.hist.sum(axis=0)
        mean = float(np.nansum(e["mean"] * e["finite"]) / finite_total) if finite_total else np.nan
        # pooled variance over all values of the group
        second = np.nansum((e["std"] ** 2 + e["mean"] ** 2) * e["finite"]) / finite_total if finite_total else np.nan
        lo, hi = float(np.nanmin(e["min"])) if finite_total else 0.0, float(np.nanmax(e["max"])) if finite_total else 0.0
        summary = {
            "rows": self.rows + self.null_rows, "null_rows": self.null_rows, "null_values": self.null_values,
            "values": values, "nan": int(e["nan"].sum()), "inf": int((e["posinf"] + e["neginf"]).sum()),
            "non_finite_share": non_finite / values if values else 0.0,
            "zero_share": float(e["zeros"].sum() / values) if values else 0.0,
            "min": _num(lo) if finite_total else None, "max": _num(hi) if finite_total else None,
            "mean": _num(mean), "std": _num(np.sqrt(max(second - mean**2, 0.0))) if finite_total else None,
            "quantiles": dict(zip([f"p{int(q * 100):02d}" for q in QUANTILES],
                                  H.quantiles(group_hist, list(QUANTILES), lo, hi), strict=True)),
        }
        return {
            "role": str(self.spec.role), "kind": self.kind, "length": len(self.sum), "summary": summary,
            "elements": {k: _nums(v) if v.dtype.kind == "f" else v.astype(np.int64).tolist() for k, v in e.items()},
            "group_histogram": group_hist.tolist(),
            "histograms": H.to_sparse(self.hist),
        }


class BinaryGroupStats:
    """A {0, 1} group: per-element share of ones, and values outside {0, 1}."""

    kind = "binary"

    def __init__(self, spec: FeatureSpec) -> None:
        self.spec = spec
        self.rows = 0
        self.null_rows = 0
        self.null_values = 0
        self.ones = np.zeros(spec.length, dtype=np.int64)
        self.invalid = np.zeros(spec.length, dtype=np.int64)

    def add(self, x: np.ndarray, where: Where) -> None:
        if not len(x):
            return
        self.rows += x.shape[0]
        breach = domain_breach(self.spec, x)
        if breach is not None:
            self.invalid += ((x != 0) & (x != 1)).sum(axis=0)
            where.findings.add(breach.code, self.spec.column, breach.count, where.file, where.rows(breach.rows))
            self.ones += (x == 1).sum(axis=0)
        else:
            self.ones += x.sum(axis=0, dtype=np.int64)

    def to_json(self) -> dict[str, Any]:
        valid = self.rows - self.invalid
        share = np.where(valid > 0, self.ones / np.maximum(valid, 1), np.nan)
        values = self.rows * len(self.ones)
        return {
            "role": str(self.spec.role), "kind": self.kind, "length": len(self.ones),
            "summary": {"rows": self.rows + self.null_rows, "null_rows": self.null_rows,
                        "null_values": self.null_values, "values": values,
                        "ones_share": float(self.ones.sum() / values) if values else 0.0,
                        "invalid": int(self.invalid.sum())},
            "elements": {"count": valid.tolist(), "ones": self.ones.tolist(), "invalid": self.invalid.tolist(),
                         "ones_share": _nums(share)},
        }


class DiscreteGroupStats:
    """Categorical codes: per-element counts of codes 0..63 (plus negative, >= 64), min, max, mean."""

    kind = "discrete"

    def __init__(self, spec: FeatureSpec) -> None:
        n = spec.length
        self.spec = spec
        self.rows = 0
        self.null_rows = 0
        self.null_values = 0
        self.counts = np.zeros((n, DISCRETE_VALUES + 2), dtype=np.int64)
        self.min = np.full(n, np.iinfo(np.int64).max)
        self.max = np.full(n, np.iinfo(np.int64).min)
        self.sum = np.zeros(n)

    def add(self, x: np.ndarray, where: Where) -> None:
        if not len(x):
            return
        self.rows += x.shape[0]
        buckets = np.clip(x, -1, DISCRETE_VALUES).astype(np.int64) + 1
        buckets += np.arange(x.shape[1], dtype=np.int64) * (DISCRETE_VALUES + 2)
        self.counts += np.bincount(buckets.ravel(), minlength=self.counts.size).reshape(self.counts.shape)
        self.min = np.minimum(self.min, x.min(axis=0))
        self.max = np.maximum(self.max, x.max(axis=0))
        self.sum += x.sum(axis=0, dtype=np.float64)

    def to_json(self) -> dict[str, Any]:
        values = self.rows * len(self.sum)
        has = self.rows > 0
        mean = self.sum / self.rows if has else np.full(len(self.sum), np.nan)
        return {
            "role": str(self.spec.role), "kind": self.kind, "length": len(self.sum),
            "summary": {"rows": self.rows + self.null_rows, "null_rows": self.null_rows,
                        "null_values": self.null_values, "values": values,
                        "zero_share": float(self.counts[:, 1].sum() / values) if values else 0.0,
                        "min": int(self.min.min()) if has else None, "max": int(self.max.max()) if has else None,
                        "distinct_codes_max": int((self.counts > 0).sum(axis=1).max()) if has else 0},
            "elements": {"count": [self.rows] * len(self.sum),
                         "min": self.min.tolist() if has else [None] * len(self.sum),
                         "max": self.max.tolist() if has else [None] * len(self.sum), "mean": _nums(mean)},
            "value_counts": self.counts.tolist(),
        }


class IdStats:
    """A scalar ID: nulls, negatives, range, approximate distinct count and top IDs."""

    kind = "id"

    def __init__(self, spec: FeatureSpec, top_k: int) -> None:
        self.spec = spec
        self.top_k = top_k
        self.rows = 0
        self.null_rows = 0
        self.null_values = 0
        self.negative = 0
        self.min: int | None = None
        self.max: int | None = None
        self.hll = HyperLogLog()
        self.top = TopIds()

    def add(self, x: np.ndarray, where: Where) -> None:
        if not len(x):
            return
        self.rows += len(x)
        breach = domain_breach(self.spec, x)
        if breach is not None:
            self.negative += breach.count
            where.findings.add(breach.code, self.spec.column, breach.count, where.file,
                               where.rows(breach.rows), reason="negative")
        low, high = int(x.min()), int(x.max())
        self.min = low if self.min is None else min(self.min, low)
        self.max = high if self.max is None else max(self.max, high)
        self.hll.add(x)
        self.top.add(x)

    def to_json(self) -> dict[str, Any]:
        top = self.top.to_json(self.top_k)
        return {
            "role": str(self.spec.role), "kind": self.kind, "length": 1,
            "summary": {"rows": self.rows + self.null_rows, "null_rows": self.null_rows, "negative": self.negative,
                        "min": self.min, "max": self.max, "approx_distinct": round(self.hll.estimate()),
                        "top_ids_share": sum(t["count"] for t in top) / self.rows if self.rows else 0.0},
            "top_ids": top,
        }


class LabelStats:
    """A scalar label: zeros, ones, values outside {0, 1}, nulls; positive rate over valid rows."""

    kind = "label"

    def __init__(self, spec: FeatureSpec) -> None:
        self.spec = spec
        self.rows = 0
        self.null_rows = 0
        self.null_values = 0
        self.ones = 0
        self.zeros = 0
        self.other = 0
        self.other_values: set[float] = set()

    def add(self, x: np.ndarray, where: Where) -> None:
        if not len(x):
            return
        self.rows += len(x)
        ones = int(np.count_nonzero(x == 1))
        zeros = int(np.count_nonzero(x == 0))
        self.ones += ones
        self.zeros += zeros
        breach = domain_breach(self.spec, x) if ones + zeros < len(x) else None
        if breach is not None:
            self.other += breach.count
            values = np.unique(x[breach.rows])[:5].tolist()
            self.other_values.update(values[: max(0, 5 - len(self.other_values))])
            where.findings.add(breach.code, self.spec.column, breach.count, where.file,
                               where.rows(breach.rows),
                               summary={"values": sorted(self.other_values)})

    def to_json(self) -> dict[str, Any]:
        valid = self.ones + self.zeros
        return {
            "role": str(self.spec.role), "kind": self.kind, "length": 1,
            "summary": {"rows": self.rows + self.null_rows, "null_rows": self.null_rows, "positives": self.ones,
                        "negatives": self.zeros, "other": self.other,
                        "positive_rate": self.ones / valid if valid else None},
        }


def make_accumulator(spec: FeatureSpec, top_k: int):
    if spec.role in (Role.CONTINUOUS, Role.EMBEDDING):
        return NumericGroupStats(spec)
    if spec.role == Role.BINARY:
        return BinaryGroupStats(spec)
    if spec.role == Role.DISCRETE:
        return DiscreteGroupStats(spec)
    if spec.role == Role.ID:
        return IdStats(spec, top_k)
    return LabelStats(spec)
