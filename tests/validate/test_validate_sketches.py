"""Building blocks: log-scale histogram bins, Jensen-Shannon, HyperLogLog and top IDs (property tests)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from components.validate import histogram as H
from components.validate.rules import wilson_interval
from components.validate.sketches import HyperLogLog, TopIds

floats = arrays(np.float32, st.tuples(st.integers(1, 40), st.integers(1, 5)),
                elements=st.floats(width=32, allow_nan=True, allow_infinity=True))


@settings(max_examples=200, deadline=None)
@given(floats)
def test_every_value_lands_in_the_bin_that_contains_it(values) -> None:
    hist = H.histogram_rows(values)
    assert hist.sum(axis=1).tolist() == [values.shape[0]] * values.shape[1]
    lower, upper = H.bin_edges()
    for column in range(values.shape[1]):
        single = H.histogram_rows(values[:, column:column + 1].copy())[0]
        assert (single == hist[column]).all()
        for value in values[:, column]:
            (b,) = np.flatnonzero(H.histogram_rows(np.array([[value]], dtype=np.float32))[0])
            if not np.isfinite(value):
                assert b == H.NON_FINITE
            elif abs(value) < np.finfo(np.float32).tiny:  # zero and subnormals
                assert b == H.ZERO
            else:
                assert lower[b] <= value < upper[b] or (value < 0 and lower[b] < value <= upper[b])


@settings(max_examples=50, deadline=None)
@given(arrays(np.int64, st.integers(1, 60), elements=st.integers(0, 1000)))
def test_jensen_shannon_is_a_bounded_symmetric_divergence(counts) -> None:
    other = counts[::-1].copy()
    js = H.jensen_shannon(counts[None].astype(float), other[None].astype(float))[0]
    assert 0 <= js <= 1
    assert js == pytest.approx(H.jensen_shannon(other[None].astype(float), counts[None].astype(float))[0])
    assert H.jensen_shannon(counts[None].astype(float), counts[None].astype(float))[0] == pytest.approx(0, abs=1e-12)


def test_disjoint_histograms_have_divergence_one() -> None:
    a, b = np.zeros((1, H.NUM_BINS)), np.zeros((1, H.NUM_BINS))
    a[0, 3], b[0, 200] = 10, 7
    assert H.jensen_shannon(a, b)[0] == pytest.approx(1.0)


def test_sparse_roundtrip_and_quantiles_of_a_lognormal() -> None:
    values = np.random.default_rng(0).lognormal(0, 1, (20_000, 3)).astype(np.float32)
    hist = H.histogram_rows(values)
    assert (H.from_sparse(H.to_sparse(hist)) == hist).all()
    q = H.quantiles(hist[0], [0.1, 0.5, 0.9], float(values[:, 0].min()), float(values[:, 0].max()))
    assert q == pytest.approx(np.quantile(values[:, 0], [0.1, 0.5, 0.9]), rel=0.05)


@pytest.mark.parametrize("distinct", [10, 3_000, 200_000])
def test_hyperloglog_estimates_distinct_ids(distinct) -> None:
    rng = np.random.default_rng(distinct)
    ids = rng.integers(0, 2**62, distinct)
    hll = HyperLogLog()
    for chunk in np.array_split(rng.choice(ids, 3 * distinct), 7):
        hll.add(chunk)
    hll.add(ids)  # every id at least once
    assert hll.estimate() == pytest.approx(distinct, rel=0.06)


def test_top_ids_are_exact_for_heavy_hitters() -> None:
    rng = np.random.default_rng(1)
    ranks = np.minimum(rng.zipf(1.3, 300_000), 100_000)
    top = TopIds(capacity=512)
    for chunk in np.array_split(ranks, 60):
        top.add(chunk)
    ids, counts = np.unique(ranks, return_counts=True)
    exact = sorted(zip(counts.tolist(), ids.tolist(), strict=True), reverse=True)[:10]
    assert [(i, c) for c, i in exact] == top.top(10)


def test_wilson_interval_is_honest_near_zero() -> None:
    low, high = wilson_interval(0, 1_000, 4.0)
    assert low == 0 and 0.01 < high < 0.02
    low, high = wilson_interval(500, 1_000, 4.0)
    assert low < 0.5 < high
