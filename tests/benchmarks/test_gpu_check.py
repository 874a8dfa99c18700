"""`make gpu-check` on a machine without a GPU: it says so, measures nothing, claims nothing, exits 0."""

from __future__ import annotations

import os
import subprocess

import pytest

from benchmarks.gpu_check import compare_round_trips
from tests.train.conftest import REPO_ROOT

pytestmark = pytest.mark.integration


def test_without_a_gpu_it_says_so_and_exits_0(tmp_path):
    out = tmp_path / "gpu_check.json"
    done = subprocess.run(["make", "--no-print-directory", "gpu-check", f"GPU_CHECK_ARGS=--out {out}"], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=300, env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    assert done.returncode == 0, done.stderr[-2000:]
    assert "gpu-check: no CUDA GPU is present" in done.stdout
    assert "nothing was measured and no result is claimed" in done.stdout
    lines = done.stdout.splitlines()
    assert not [line for line in lines if line.startswith("gpu_check ") or "examples_per_s" in line]  # no measurement
    assert not out.exists()


def run(history: list[list[float]], probabilities: list[list[float]], resumed_from: int = 10) -> dict:
    return {"device": "x", "resumed_from": resumed_from, "history": history, "probabilities": probabilities}


def test_the_round_trip_agrees_only_within_the_tolerance():
    cpu = run([[2, 0.70], [4, 0.60]], [[0.2, 0.9]])
    assert compare_round_trips(run([[2, 0.7007], [4, 0.6006]], [[0.201, 0.899]]), cpu)["agrees_with_cpu"]
    assert not compare_round_trips(run([[2, 0.71], [4, 0.60]], [[0.2, 0.9]]), cpu)["agrees_with_cpu"]  # a loss off
    assert not compare_round_trips(run([[2, 0.70], [4, 0.60]], [[0.21, 0.9]]), cpu)["agrees_with_cpu"]  # a prediction off
    assert not compare_round_trips(run([[2, 0.70], [4, 0.60]], [[0.2, 0.9]], resumed_from=None), cpu)["agrees_with_cpu"]
