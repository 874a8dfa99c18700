"""The quality benchmark's tables from runs made apart (one seed, or some models, per run)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from benchmarks.bench_quality import merge_runs
from tests.train.conftest import REPO_ROOT

TASKS = ("is_favorited", "is_replied")


def _task(auroc: float, rce: float, calibration: float, positives: int = 500) -> dict:
    return {"auroc": auroc, "rce": rce, "calibration": calibration, "positives": positives, "count": 10_000}


def _oracle(auroc: float = 0.8) -> dict:
    return {"tasks": {t: {**_task(auroc, 20.0, 1.0), "log_loss": 0.1, "positive_rate": 0.05} for t in TASKS},
            "other_labels": {}, "unseen_user_share": 0.0}


def _model(auroc: float, rce: float, calibration: float) -> dict:
    return {"metrics": {"tasks": {t: _task(auroc, rce, calibration) for t in TASKS}}, "seconds": 12.0,
            "peak_rss_mb": 900.0}


def _run(seed: int, models: dict, steps: int = 0, oracle: dict | None = None) -> list[dict]:
    return [{"seed": seed, "oracle": oracle or _oracle(), "models": models, "convert_s": 3.0, "steps": steps}]


def test_runs_of_one_seed_merge_in_model_order_and_keep_the_rankers_steps():
    peers = _run(1, {"lightgbm": _model(0.7, 10.0, 1.0), "logistic_regression": _model(0.65, 8.0, 1.0)})
    ranker = _run(1, {"ranker": _model(0.75, 15.0, 1.0)}, steps=3516)
    other_seed = _run(2, {"ranker": _model(0.74, 14.0, 1.0)}, steps=3516)
    seeds = merge_runs([peers, other_seed, ranker])
    assert [s["seed"] for s in seeds] == [1, 2]
    assert list(seeds[0]["models"]) == ["ranker", "logistic_regression", "lightgbm"]
    assert seeds[0]["steps"] == 3516


def test_runs_that_scored_different_eval_rows_are_refused():
    with pytest.raises(SystemExit, match="seed 1: the runs scored different eval rows"):
        merge_runs([_run(1, {"ranker": _model(0.75, 15.0, 1.0)}, steps=10),
                    _run(1, {"lightgbm": _model(0.7, 10.0, 1.0)}, oracle=_oracle(0.81))])


def test_from_json_writes_one_table_with_every_model_and_the_note(tmp_path):
    (tmp_path / "a.json").write_text(json.dumps(_run(1, {"lightgbm": _model(0.7, 10.0, 0.95)})))
    (tmp_path / "b.json").write_text(json.dumps(_run(1, {"ranker": _model(0.75, 15.0, 1.02)}, steps=77)))
    out = tmp_path / "quality.md"
    done = subprocess.run([sys.executable, "-m", "benchmarks.bench_quality", "--from-json", str(tmp_path / "a.json"),
                           str(tmp_path / "b.json"), "--rows", "123", "--split-key", "tweet_id", "--out", str(out),
                           "--note", "Only seed 1 ran.", "--title", "Model quality at 123 rows"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    text = out.read_text()
    assert text.startswith("## Model quality at 123 rows\n")
    assert "--rows 123 --seeds 1 " in text and "Only seed 1 ran." in text
    assert "Seed 1 (ranker: 77 steps" in text
    ranker = next(line for line in text.splitlines() if line.startswith("| Heavy Ranker"))
    lightgbm = next(line for line in text.splitlines() if line.startswith("| LightGBM"))
    assert "| 0.7500 | 15.00 | 0.833 | 0.750 | 1.02-1.02 |" in ranker  # lifts against the oracle's 0.8 / 20
    assert "| 0.7000 | 10.00 | 0.667 | 0.500 | 0.95-0.95 |" in lightgbm
    assert text.index("| Heavy Ranker") < text.index("| LightGBM")
