"""The streaming metrics agree with exact references (scikit-learn, or computed by hand)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import average_precision_score, log_loss, roc_auc_score

from components.metrics.binary import (
    EPSILON,
    BinaryMetricAccumulator,
    clip_probabilities,
    relative_cross_entropy,
)


def synthetic(n: int, base: float, separation: float, spread: float, seed: int,
              weighted: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Labels from a latent score; predictions a noisy view of it (like a trained model)."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=n)
    y = (rng.random(n) < 1 / (1 + np.exp(-(base + separation * z)))).astype(np.float64)
    p = 1 / (1 + np.exp(-(base + spread * z + rng.normal(scale=0.3 * spread + 1e-3, size=n))))
    # Downsampling weights as the reader makes them: y/pos_rate + (1-y)/neg_rate, neg_rate=0.1.
    w = np.where(y > 0, 1.0, 10.0) if weighted else None
    return p, y, w


def streamed(p, y, w=None, batch=997, **kwargs) -> BinaryMetricAccumulator:
    acc = BinaryMetricAccumulator("task", **kwargs)
    for start in range(0, len(p), batch):
        part = slice(start, start + batch)
        acc.update(p[part], y[part], None if w is None else w[part])
    return acc


def exact_rce(p, y, w=None) -> tuple[float, float]:
    """RCE and NRCE straight from their definitions (docs/model.md), over all examples at once."""
    w = np.ones_like(p) if w is None else w
    mean_label = np.average(y, weights=w)
    ce = log_loss(y, clip_probabilities(p), sample_weight=w)
    scaled = clip_probabilities(p * mean_label / np.average(p, weights=w))
    nce = log_loss(y, scaled, sample_weight=w)
    reference = -(mean_label * math.log(mean_label) + (1 - mean_label) * math.log(1 - mean_label))
    return 100 * (1 - ce / reference), 100 * (1 - nce / reference)


CASES = {
    "balanced": dict(base=-0.5, separation=1.5, spread=1.5),
    "rare_positives": dict(base=-6.0, separation=1.5, spread=1.5),
    "weak_concentrated": dict(base=-3.0, separation=0.2, spread=0.05),
    "strong": dict(base=0.0, separation=8.0, spread=8.0),
    "overconfident": dict(base=-1.0, separation=1.0, spread=3.0),
}


@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_streaming_metrics_match_exact_references(case: str, weighted: bool) -> None:
    p, y, w = synthetic(60_000, seed=len(case), weighted=weighted, **CASES[case])
    m = streamed(p, y, w).compute()

    assert m.auroc == pytest.approx(roc_auc_score(y, p, sample_weight=w), abs=1e-3)
    assert m.average_precision == pytest.approx(average_precision_score(y, p, sample_weight=w), abs=1e-3)
    assert m.log_loss == pytest.approx(log_loss(y, clip_probabilities(p), sample_weight=w), rel=1e-9)
    rce, nrce = exact_rce(p, y, w)
    assert m.rce == pytest.approx(rce, abs=1e-6)
    assert m.nrce == pytest.approx(nrce, abs=1e-3)
    wts = np.ones_like(p) if w is None else w
    assert m.calibration == pytest.approx(np.average(p, weights=wts) / np.average(y, weights=wts), rel=1e-9)
    assert m.count == len(p) and m.positives == int(y.sum())
    assert m.weighted_count == pytest.approx(wts.sum())


def test_reported_auroc_error_bound_holds_and_is_small_for_a_typical_model() -> None:
    p, y, _ = synthetic(100_000, base=-2.0, separation=1.5, spread=1.5, seed=3)
    m = streamed(p, y).compute()
    assert abs(m.auroc - roc_auc_score(y, p)) <= m.auroc_error_bound
    assert m.auroc_error_bound < 1e-3


def test_coarse_bins_are_visibly_worse_so_the_reference_test_can_fail() -> None:
    p, y, _ = synthetic(50_000, base=-3.0, separation=0.5, spread=0.3, seed=4)
    coarse = streamed(p, y, num_bins=256).compute()
    fine = streamed(p, y).compute()
    exact = roc_auc_score(y, p)
    assert abs(fine.auroc - exact) < 1e-4
    assert coarse.auroc_error_bound > 1e-3
    assert abs(coarse.auroc - exact) <= coarse.auroc_error_bound


def test_hand_computed_four_examples() -> None:
    # Positives at 0.8 and 0.4, negatives at 0.6 and 0.2: 3 of 4 pairs ordered -> AUROC 0.75.
    # AP: thresholds 0.8 (P=1, R=.5), 0.6 (P=.5), 0.4 (P=2/3, R=1) -> .5*1 + .5*2/3 = 5/6.
    p = np.array([0.8, 0.6, 0.4, 0.2])
    y = np.array([1.0, 0.0, 1.0, 0.0])
    m = streamed(p, y).compute()
    assert m.auroc == pytest.approx(0.75, abs=1e-12)
    assert m.average_precision == pytest.approx(5 / 6, abs=1e-12)
    expected_ce = -(math.log(0.8) + math.log(0.4) + math.log(0.4) + math.log(0.8)) / 4
    assert m.log_loss == pytest.approx(expected_ce)
    assert m.rce == pytest.approx(100 * (1 - expected_ce / math.log(2)))
    assert m.calibration == pytest.approx(0.5 / 0.5)
    # Threshold = base rate 0.5: tn=.2, fp=.6, fn=.4, tp=.8.
    assert m.threshold == pytest.approx(0.5, rel=1e-3)
    assert m.confusion_matrix == ((1, 1), (1, 1))


@pytest.mark.parametrize("threshold", [None, 0.5, 0.03])
def test_confusion_matrix_counts_examples_at_the_reported_threshold(threshold) -> None:
    p, y, w = synthetic(30_000, base=-4.0, separation=1.5, spread=1.5, seed=9, weighted=True)
    m = streamed(p, y, w, threshold=threshold).compute()
    if threshold is None:  # base rate: the weighted positive rate, snapped to a bin edge
        assert m.threshold == pytest.approx(np.average(y, weights=w), rel=2e-3)
    else:
        assert m.threshold == pytest.approx(threshold, rel=2e-3)
    predicted, actual = p >= m.threshold, y > 0.5
    expected = ((np.sum(~actual & ~predicted), np.sum(~actual & predicted)),
                (np.sum(actual & ~predicted), np.sum(actual & predicted)))
    assert m.confusion_matrix == expected
    if threshold is None:  # unlike 0.5, the base rate flags a useful share of a rare task
        assert m.confusion_matrix[1][1] > 0.3 * actual.sum()


def test_constant_predictor_has_zero_rce_and_half_auroc() -> None:
    rng = np.random.default_rng(5)
    y = (rng.random(10_000) < 0.1).astype(float)
    p = np.full_like(y, y.mean())
    m = streamed(p, y).compute()
    assert m.auroc == pytest.approx(0.5)
    assert m.rce == pytest.approx(0.0, abs=1e-9)
    assert m.nrce == pytest.approx(0.0, abs=1e-6)
    assert m.calibration == pytest.approx(1.0)


def test_nrce_ignores_a_global_scale_error_that_rce_punishes() -> None:
    p, y, _ = synthetic(50_000, base=-2.0, separation=1.5, spread=1.5, seed=6)
    honest = streamed(p, y).compute()
    inflated = streamed(p * 0.5, y).compute()
    assert inflated.calibration == pytest.approx(honest.calibration * 0.5)
    assert inflated.rce < honest.rce - 1
    assert inflated.nrce == pytest.approx(honest.nrce, abs=0.5)


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    n=st.integers(2, 3000),
    batch=st.integers(1, 500),
    weighted=st.booleans(),
)
def test_result_does_not_depend_on_how_the_stream_is_batched(seed, n, batch, weighted) -> None:
    p, y, w = synthetic(n, base=-1.0, separation=1.0, spread=1.0, seed=seed, weighted=weighted)
    one = streamed(p, y, w, batch=n, num_bins=1024).compute()
    many = streamed(p, y, w, batch=batch, num_bins=1024).compute()
    for name in ("auroc", "average_precision", "log_loss", "rce", "nrce", "calibration"):
        a, b = getattr(one, name), getattr(many, name)
        assert (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b, rel=1e-9, abs=1e-12), name
    assert one.confusion_matrix == many.confusion_matrix


def test_undefined_metrics_are_nan_not_made_up() -> None:
    no_positives = streamed(np.array([0.1, 0.2, 0.3]), np.zeros(3)).compute()
    assert math.isnan(no_positives.auroc) and math.isnan(no_positives.rce)
    assert math.isnan(no_positives.average_precision)
    assert not math.isnan(no_positives.log_loss)

    broken = streamed(np.array([0.9, np.nan, 0.2, 0.7]), np.array([1.0, 1.0, 0.0, 0.0])).compute()
    assert broken.nonfinite_predictions == 1
    assert math.isnan(broken.auroc) and math.isnan(broken.log_loss) and math.isnan(broken.calibration)


def test_memory_is_fixed_by_the_bin_count_not_the_data() -> None:
    small = streamed(*synthetic(1_000, -1, 1, 1, seed=7)[:2])
    large = streamed(*synthetic(200_000, -1, 1, 1, seed=7)[:2])
    assert small.nbytes == large.nbytes == BinaryMetricAccumulator("t").nbytes


def test_curves_are_monotone_and_span_the_unit_square() -> None:
    p, y, _ = synthetic(20_000, base=-1.0, separation=1.5, spread=1.5, seed=8)
    m = streamed(p, y, curve_points=50).compute()
    fpr = [pt.x for pt in m.roc]
    tpr = [pt.y for pt in m.roc]
    assert fpr[0] == 0 and tpr[0] == 0 and fpr[-1] == pytest.approx(1) and tpr[-1] == pytest.approx(1)
    assert all(np.diff(fpr) >= 0) and all(np.diff(tpr) >= 0)
    assert len(m.roc) <= 60
    thresholds = [pt.threshold for pt in m.roc]
    assert all(np.diff(thresholds) <= 0)
    # Trapezoids under the kept ROC points approximate the AUROC.
    assert np.trapezoid(tpr, fpr) == pytest.approx(m.auroc, abs=0.01)
    recall = [pt.x for pt in m.precision_recall]
    assert all(np.diff(recall) >= 0) and recall[-1] == pytest.approx(1)
    # Reliability buckets hold equal weight and cover everything.
    assert sum(pt.threshold for pt in m.reliability) == pytest.approx(1)


def test_relative_cross_entropy_definition() -> None:
    assert relative_cross_entropy(math.log(2), 0.5) == pytest.approx(0.0)
    assert relative_cross_entropy(0.0, 0.5) == pytest.approx(100.0)
    # The base rate is clipped like predictions, so an all-negative set stays finite.
    assert math.isfinite(relative_cross_entropy(0.1, 0.0))
    assert EPSILON == 1e-7
