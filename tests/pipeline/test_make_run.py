"""`make run`, the newcomer's first command, run for real: it must end with a blessed model and
print the per-task table against the oracle plus where the report and the model are."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from components.common import storage

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_make_run_ends_with_a_blessed_model_and_prints_the_table(tmp_path):
    run_dir = tmp_path / "run"
    env = {**os.environ, "RECAP_LOG_LEVEL": "WARNING"}
    done = subprocess.run(
        ["make", "--no-print-directory", "run", f"RUN_DIR={run_dir}", "RUN_ROWS=60000"],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=900,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    assert "run SUCCEEDED" in out and "blessed: True" in out, out[-3000:]
    rows = {line.split()[0]: line.split() for line in out.splitlines() if line.startswith("is_")}
    assert len(rows) == 10  # one line per task
    lifts = [float(r[3]) for r in rows.values() if r[3] != "-"]
    assert lifts and sum(lifts) / len(lifts) > 0.3, rows  # the model learned the planted signal
    model = re.search(r"^\s+model:\s+(\S+)$", out, re.M).group(1)
    report = re.search(r"^\s+evaluation report:\s+(\S+)$", out, re.M).group(1)
    serving = re.search(r"^\s+serving copy:\s+(\S+)$", out, re.M).group(1)
    assert storage.exists(storage.join(model, "weights.pt"))
    assert "<svg" in storage.read_text(report)
    assert storage.exists(storage.join(serving, "weights.pt"))
    latest = storage.read_json(storage.join(storage.parent(serving), "LATEST"))
    assert latest["model_uri"] == serving
