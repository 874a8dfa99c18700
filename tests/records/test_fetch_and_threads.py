"""gs:// shards arrive several at a time, bounded; TensorFlow's pools fit the rank's CPU share."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading

import numpy as np
import pytest

from components.common import storage
from components.common.schema import load_schema
from components.convert import ConvertSettings, run
from components.records import shards as shards_module
from components.records.reader import ReaderOptions, count_records, read_batches
from components.records.threads import THREADS_ENV, cgroup_cpu_limit, rank_threads
from tests.convert.rawdata import write_raw

tf = pytest.importorskip("tensorflow")

SCHEMA = load_schema("local")


@pytest.mark.integration
def test_gcs_shards_of_a_group_download_in_parallel_within_two_groups(gcs_bucket, tmp_path, monkeypatch):
    write_raw(SCHEMA, str(tmp_path / "raw"), rows=480, files=2)
    run(str(tmp_path / "raw"), SCHEMA, str(tmp_path / "out"),
        ConvertSettings(shards=8, workers=1, eval_fraction=0.0, layout="packed"))
    storage.copy_prefix(str(tmp_path / "out" / "train"), f"{gcs_bucket}/train")
    cache = tmp_path / "cache"
    real_open, lock, state = storage.open_read, threading.Lock(), {"now": 0, "most": 0, "cached": 0}
    arrived = threading.Barrier(2, timeout=5)

    def counting_open(uri):  # the real download, counted; two must be in flight together once
        with lock:
            state["now"] += 1
            state["most"] = max(state["most"], state["now"])
            state["cached"] = max(state["cached"], len([p for p in cache.iterdir() if not p.name.endswith(".part")]))
        with contextlib.suppress(threading.BrokenBarrierError):
            arrived.wait()
        try:
            return _Closing(real_open(uri), lambda: state.__setitem__("now", state["now"] - 1))
        except BaseException:
            state["now"] -= 1
            raise

    monkeypatch.setattr(shards_module.storage, "open_read", counting_open)
    options = ReaderOptions(batch_size=32, num_parallel_reads=4, cache_dir=str(cache), seed=2)
    remote = list(read_batches(f"{gcs_bucket}/train", SCHEMA, options))
    local = list(read_batches(str(tmp_path / "out" / "train"), SCHEMA, options))
    assert sum(b.batch_size for b in remote) == count_records(str(tmp_path / "out" / "train"))
    for a, b in zip(remote, local, strict=True):
        np.testing.assert_array_equal(a.continuous.numpy(), b.continuous.numpy())
    assert state["most"] >= 2  # shards of a group fetched together
    assert state["cached"] <= 8  # never more than two groups of 4 on disk
    assert list(cache.iterdir()) == []


class _Closing:
    """A stream that reports when it is closed (the download finished)."""

    def __init__(self, stream, on_close):
        self._stream, self._on_close = stream, on_close

    def __enter__(self):
        return self._stream.__enter__()

    def __exit__(self, *exc):
        try:
            return self._stream.__exit__(*exc)
        finally:
            self._on_close()


def test_cgroup_limits_are_read_for_v2_and_v1(tmp_path):
    (tmp_path / "cpu.max").write_text("250000 100000\n")
    assert cgroup_cpu_limit(tmp_path) == 2.5
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert cgroup_cpu_limit(tmp_path) is None
    v1 = tmp_path / "v1"
    (v1 / "cpu").mkdir(parents=True)
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("400000")
    (v1 / "cpu" / "cpu.cfs_period_us").write_text("100000")
    assert cgroup_cpu_limit(v1) == 4.0
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("-1")
    assert cgroup_cpu_limit(v1) is None
    assert cgroup_cpu_limit(tmp_path / "missing") is None


def test_each_rank_gets_its_share_of_the_pods_cpus(tmp_path):
    (tmp_path / "cpu.max").write_text("600000 100000\n")  # a pod limited to 6 CPUs
    cpus = len(os.sched_getaffinity(0))
    assert rank_threads({"LOCAL_WORLD_SIZE": "1"}, tmp_path) == min(6, cpus)
    assert rank_threads({"LOCAL_WORLD_SIZE": "2"}, tmp_path) == max(1, min(6, cpus) // 2)
    assert rank_threads({"LOCAL_WORLD_SIZE": "8"}, tmp_path) == 1  # never zero
    assert rank_threads({"LOCAL_WORLD_SIZE": "8", THREADS_ENV: "3"}, tmp_path) == 3


@pytest.mark.integration
def test_a_reading_process_caps_tensorflows_pools(tmp_path):
    write_raw(SCHEMA, str(tmp_path / "raw"), rows=60, files=1)
    run(str(tmp_path / "raw"), SCHEMA, str(tmp_path / "out"), ConvertSettings(shards=1, workers=1))
    code = (
        "import json, sys\n"
        "from components.common.schema import load_schema\n"
        "from components.records.reader import ReaderOptions, read_batches\n"
        "list(read_batches(sys.argv[1], load_schema('local'), ReaderOptions(batch_size=8)))\n"
        "import tensorflow as tf\n"
        "print(json.dumps([tf.config.threading.get_inter_op_parallelism_threads(),"
        " tf.config.threading.get_intra_op_parallelism_threads()]))\n"
    )
    env = {**os.environ, "LOCAL_WORLD_SIZE": "4", "TF_CPP_MIN_LOG_LEVEL": "3"}
    env.pop(THREADS_ENV, None)
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path / "out" / "train")], env=env,
                          capture_output=True, text=True, timeout=300, check=True)
    expected = rank_threads(env)
    assert json.loads(done.stdout.strip().splitlines()[-1]) == [expected, expected]
