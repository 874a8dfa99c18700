"""`make run`'s table: both lifts against the oracle, and a mean over the tasks with enough positives."""

from __future__ import annotations

import pytest

from components.evaluate.summary import mean_row, summary_rows, summary_table


def _metrics() -> dict:
    return {"tasks": {
        "is_favorited": {"auroc": 0.75, "rce": 8.0, "calibration": 1.05, "positives": 1400, "count": 20000},
        "is_retweeted": {"auroc": 0.70, "rce": 3.0, "calibration": 0.95, "positives": 240, "count": 20000},
        "is_report_tweet_clicked": {"auroc": 0.40, "rce": -5.0, "calibration": 3.0, "positives": 16, "count": 20000},
    }}


def _oracle() -> dict:
    return {"protocol": {"split_key": "user_id", "eval_fraction": 0.1}, "tasks": {
        "is_favorited": {"auroc": 0.80, "rce": 10.0, "calibration": 1.0},
        "is_retweeted": {"auroc": 0.75, "rce": 12.0, "calibration": 1.02},
        "is_report_tweet_clicked": {"auroc": 0.90, "rce": 20.0, "calibration": 1.1},
    }}


def test_lifts_divide_by_the_oracle_of_the_same_task() -> None:
    rows = {r["task"]: r for r in summary_rows(_metrics(), _oracle())}
    assert rows["is_favorited"]["auroc_lift"] == pytest.approx(0.25 / 0.30)
    assert rows["is_favorited"]["rce_lift"] == pytest.approx(0.8)
    assert rows["is_retweeted"]["rce_lift"] == pytest.approx(0.25)


def test_the_mean_leaves_out_tasks_with_few_positives() -> None:
    mean = mean_row(summary_rows(_metrics(), _oracle()))
    assert mean["task"].startswith("mean (2 tasks")
    assert mean["rce_lift"] == pytest.approx((0.8 + 0.25) / 2)
    assert mean["auroc"] == pytest.approx(0.725)


def test_the_table_shows_the_rce_lift_and_the_protocol() -> None:
    text = summary_table(_metrics(), _oracle())
    header = text.splitlines()[0].split()
    assert header[:4] == ["task", "AUROC", "oracle", "lift"] and "lift" in header[header.index("RCE") + 3:]
    line = next(ln for ln in text.splitlines() if ln.startswith("is_favorited"))
    assert line.split()[3] == "0.83" and line.split()[6] == "0.80"
    assert "split on user_id" in text
    without = next(ln for ln in summary_table(_metrics()).splitlines() if ln.startswith("is_favorited")).split()
    assert without[2] == without[3] == without[6] == "-"  # no oracle, no lift
