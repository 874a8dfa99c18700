"""Bounded-memory sketches for ID columns, vectorized with numpy.

- `HyperLogLog`: approximate distinct count (2**12 registers, ~1.6% standard error).
- `TopIds`: approximate heavy hitters (a batched Misra-Gries variant): keeps the
  `capacity` IDs with the largest counts seen so far; exact for IDs that stay in the
  summary, an underestimate for those that drop out and come back. On Zipf-popular IDs
  the head is exact, which is what the "top IDs share" statistic needs.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from components.common.hashing import splitmix64

_P = 12
_M = 1 << _P


def _bit_length32(values: np.ndarray) -> np.ndarray:
    """Bit length of uint32 values (exact: they fit a float64 mantissa)."""
    _, exponent = np.frexp(values.astype(np.float64))
    return np.where(values == 0, 0, exponent).astype(np.int64)


class HyperLogLog:
    def __init__(self, registers: np.ndarray | None = None) -> None:
        self.registers = np.zeros(_M, dtype=np.uint8) if registers is None else registers.astype(np.uint8)

    def add(self, values: np.ndarray) -> None:
        if not len(values):
            return
        h = splitmix64(values)
        index = (h >> np.uint64(64 - _P)).astype(np.int64)
        rest = (h << np.uint64(_P)) | np.uint64(1 << (_P - 1))  # sentinel bit bounds the rank
        high = (rest >> np.uint64(32)).astype(np.uint32)
        low = (rest & np.uint64(0xFFFFFFFF)).astype(np.uint32)
        leading_zeros = np.where(high > 0, 32 - _bit_length32(high), 64 - _bit_length32(low))
        np.maximum.at(self.registers, index, (leading_zeros + 1).astype(np.uint8))

    def estimate(self) -> float:
        alpha = 0.7213 / (1 + 1.079 / _M)
        raw = alpha * _M * _M / np.sum(2.0 ** -self.registers.astype(np.float64))
        zeros = int(np.count_nonzero(self.registers == 0))
        if raw <= 2.5 * _M and zeros:
            return float(_M * np.log(_M / zeros))  # linear counting for small cardinalities
        return float(raw)


class TopIds:
    def __init__(self, capacity: int = 2048) -> None:
        self.capacity = capacity
        self.ids = np.zeros(0, dtype=np.int64)
        self.counts = np.zeros(0, dtype=np.int64)

    def add(self, values: np.ndarray) -> None:
        if not len(values):
            return
        batch_ids, batch_counts = np.unique(values, return_counts=True)
        ids = np.concatenate([self.ids, batch_ids])
        counts = np.concatenate([self.counts, batch_counts])
        merged, inverse = np.unique(ids, return_inverse=True)
        totals = np.bincount(inverse, weights=counts).astype(np.int64)
        if len(merged) > self.capacity:
            keep = np.argpartition(-totals, self.capacity)[: self.capacity]
            merged, totals = merged[keep], totals[keep]
        self.ids, self.counts = merged, totals

    def top(self, k: int) -> list[tuple[int, int]]:
        order = np.lexsort((self.ids, -self.counts))[:k]
        return [(int(self.ids[i]), int(self.counts[i])) for i in order]

    def to_json(self, k: int) -> list[dict[str, Any]]:
        return [{"id": i, "count": c} for i, c in self.top(k)]
