"""Blessing decisions: baseline tolerance per metric and direction, NaN, bounds, a reason for every task."""

from __future__ import annotations

import json

import pytest

from components.common.errors import DataError, StorageError
from components.evaluate.blessing import bless, read_baseline
from components.evaluate.config import BaselineComparison, BlessingConfig, Bounds


def metrics(log_loss: float = 0.4, **aurocs: float | None) -> dict:
    return {"tasks": {task: {"auroc": auroc, "average_precision": 0.3, "log_loss": log_loss, "rce": 5.0,
                             "nrce": 5.1, "calibration": 1.01} for task, auroc in aurocs.items()},
            "ranking": {"gauc": 0.6}}


def comparison(verdict, metric):
    return next(c for c in verdict.comparisons if c.metric == metric)


def verdict(blessing, task):
    return next(v for v in blessing.tasks if v.task == task)


def test_blessed_within_tolerance_of_the_baseline() -> None:
    result = bless(metrics(fav=0.700, reply=0.796), BlessingConfig(), metrics(fav=0.702, reply=0.800))
    assert result.blessed
    assert "baseline" in result.reason
    assert comparison(verdict(result, "reply"), "auroc").improvement == pytest.approx(-0.004)


def test_refused_when_one_task_drops_more_than_the_tolerance() -> None:
    result = bless(metrics(fav=0.710, reply=0.790), BlessingConfig(baseline={"auroc": BaselineComparison(tolerance=0.005)}),
                   metrics(fav=0.700, reply=0.800))
    assert not result.blessed
    assert verdict(result, "fav").passed and not verdict(result, "reply").passed
    assert "reply" in result.reason and "0.0100 below baseline 0.8000" in result.reason
    assert "fav:" not in result.reason


def test_any_nan_metric_refuses_even_without_baseline() -> None:
    result = bless(metrics(fav=0.7, reply=None), BlessingConfig())
    assert not result.blessed and "reply: auroc is NaN" in result.reason
    nan_gauc = metrics(fav=0.7)
    nan_gauc["ranking"]["gauc"] = None
    assert not bless(nan_gauc, BlessingConfig()).blessed


def test_a_lower_is_better_metric_fails_when_it_rises_beyond_the_tolerance() -> None:
    config = BlessingConfig(baseline={"log_loss": BaselineComparison(tolerance=0.01)})
    assert config.direction("log_loss") == "lower"
    worse = bless(metrics(log_loss=0.42, fav=0.7), config, metrics(log_loss=0.40, fav=0.7))
    assert not worse.blessed and "log_loss 0.4200 is 0.0200 above baseline 0.4000 (tolerance 0.01)" in worse.reason
    assert comparison(verdict(worse, "fav"), "log_loss").improvement == pytest.approx(-0.02)
    better = bless(metrics(log_loss=0.30, fav=0.6), config, metrics(log_loss=0.40, fav=0.7))
    assert better.blessed and "log_loss by more than 0.01" in better.reason  # AUROC is not compared here
    document = better.to_json()
    assert document["criteria"]["baseline"] == {"log_loss": {"tolerance": 0.01, "direction": "lower"}}


def test_direction_can_be_set_in_the_config() -> None:
    config = BlessingConfig(baseline={"rce": BaselineComparison(tolerance=0.0, direction="lower")})
    assert not bless(metrics(fav=0.7), config, {"tasks": {"fav": {"rce": 4.0}}}).blessed  # 5.0 > 4.0 is worse here


def test_bounds_apply_per_metric_and_per_task() -> None:
    config = BlessingConfig(bounds={"auroc": Bounds(min=0.6)}, task_bounds={"reply": {"rce": Bounds(min=6.0)}})
    result = bless(metrics(fav=0.65, reply=0.9), config)
    assert not result.blessed
    assert verdict(result, "fav").passed
    assert verdict(result, "reply").reasons == ("rce 5.0000 is below the minimum 6.0",)
    assert bless(metrics(fav=0.65, reply=0.9), BlessingConfig(bounds={"auroc": Bounds(min=0.6)})).blessed
    capped = bless(metrics(fav=0.65), BlessingConfig(bounds={"log_loss": Bounds(max=0.3)}))
    assert not capped.blessed and "log_loss 0.4000 is above the maximum 0.3" in capped.reason


def test_new_task_without_baseline_passes_with_a_note() -> None:
    result = bless(metrics(fav=0.7, new=0.55), BlessingConfig(), metrics(fav=0.7))
    assert result.blessed
    assert verdict(result, "new").reasons == ("no baseline for this task",)


def test_without_baseline_or_bounds_the_reason_says_only_nan_was_checked() -> None:
    result = bless(metrics(fav=0.7), BlessingConfig())
    assert result.blessed and "only NaN checks" in result.reason
    document = result.to_json()
    assert json.loads(json.dumps(document, allow_nan=False))["tasks"]["fav"]["passed"] is True


def test_read_baseline_accepts_a_file_or_its_directory_and_names_bad_ones(tmp_path) -> None:
    (tmp_path / "metrics.json").write_text(json.dumps(metrics(fav=0.7)))
    assert read_baseline(str(tmp_path))["tasks"]["fav"]["auroc"] == 0.7
    assert read_baseline(str(tmp_path / "metrics.json"))["tasks"]["fav"]["auroc"] == 0.7
    with pytest.raises(StorageError, match="missing.json: baseline metrics not found"):
        read_baseline(str(tmp_path / "missing.json"))
    (tmp_path / "other.json").write_text('{"rows": 3}')
    with pytest.raises(DataError, match="other.json: not a per-task metrics document"):
        read_baseline(str(tmp_path / "other.json"))


def test_blessing_json_writes_nan_as_null_and_reasons_as_lists() -> None:
    result = bless(metrics(fav=None, reply=0.8), BlessingConfig(), metrics(fav=0.7, reply=0.8))
    document = json.loads(json.dumps(result.to_json(), allow_nan=False))
    fav = document["tasks"]["fav"]
    assert fav["baseline"]["auroc"] == {"value": None, "baseline": 0.7, "improvement": None}
    assert fav["passed"] is False and "auroc is NaN" in fav["reasons"]
    assert document["tasks"]["reply"]["baseline"]["auroc"]["improvement"] == 0.0
    assert document["blessed"] is False and "task" not in fav
