"""Gradient accumulation on 2 ranks: DDP all-reduces the dense gradients once per optimizer step.

The micro-batches before the last run under DDP's `no_sync`, so their gradients travel with the
last one's all-reduce. Counted by a DDP comm hook (called once per gradient bucket all-reduced).
"""

from __future__ import annotations

import json

import pytest

from tests.train.conftest import WORKER, tiny_config_data, torchrun, write_config

pytestmark = pytest.mark.integration


def test_accumulating_two_micro_batches_all_reduces_once_per_step(tmp_path):
    data = tiny_config_data(str(tmp_path / "unused"), steps=4, num_eval_steps=0, checkpoint_every_n=100)
    config = write_config(tmp_path / "c.yaml", data)
    result = tmp_path / "counts.json"
    done = torchrun([str(WORKER.parent / "allreduce_count_worker.py"), config, str(result)], nproc=2)
    assert done.returncode == 0, done.stderr[-3000:]
    counts = json.loads(result.read_text())
    buckets = counts["1"][0]
    assert buckets >= 1 and counts["1"] == [buckets] * 4
    assert counts["2"] == [buckets] * 4  # not 2 * buckets: the first micro-batch skipped its all-reduce
