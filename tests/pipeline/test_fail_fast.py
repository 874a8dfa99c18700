"""A data error stops the whole DAG within seconds of the failing step's start (no KFP retry), and
`--summary` names the step, the file/row/column and the step's log.

The time is measured from the step's own start, read from its log (kfp.local's "Executing task"
line), to the moment `recap pipeline run` returns, so the steps before it do not count.
Validate would stop this data at the gate, so the raw file is broken after validate has
passed it and before convert reads it: a raw input changed between validation and conversion.
"""

from __future__ import annotations

import datetime as dt
import re
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from components.cli import main
from components.common import storage
from components.datagen.generate import generate

pytestmark = pytest.mark.integration

FAIL_WITHIN_S = 10.0
LABEL = "is_favorited"  # a task label: the reader of train and evaluate checks it too


def labels_0_to_9(part: Path) -> None:
    table = pq.read_table(part)
    index = table.schema.get_field_index(LABEL)
    field = table.schema.field(index)
    pq.write_table(table.set_column(index, field, pa.array(np.arange(len(table)) % 10, field.type)), part)


def when_done(kfp_root: Path, task: str, action, stop: threading.Event) -> threading.Thread:
    """Run `action` as soon as `task` of the run under `kfp_root` has written its outputs."""
    def watch() -> None:
        while not stop.is_set():
            if any(kfp_root.glob(f"recap-heavy-ranker-*/{task}/executor_output.json")):
                action()
                return
            time.sleep(0.02)
    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def step_start(log: str) -> float:
    """The wall-clock time of kfp.local's "Executing task" line (HH:MM:SS.mmm, local time)."""
    first = Path(log).read_text().splitlines()[0]
    clock = dt.datetime.strptime(re.match(r"(\d\d:\d\d:\d\d\.\d{3})", first).group(1), "%H:%M:%S.%f").time()
    start = dt.datetime.combine(dt.date.today(), clock)
    if start > dt.datetime.now():  # the run crossed midnight
        start -= dt.timedelta(days=1)
    return start.timestamp()


def failed_run(raw, root, kfp_root, after_step: str, fault, capsys, failing_step: str, *flags: str):
    """`recap pipeline run --summary` with `fault` applied once `after_step` is done; asserts the
    run failed at `failing_step` and returns (its one-line reason, its step log, when it ended)."""
    stop = threading.Event()
    watcher = when_done(kfp_root, after_step, fault, stop)
    code = main(["pipeline", "run", "--raw", str(raw), "--root", str(root), "--pipeline-root", str(kfp_root),
                 *flags, "--summary"])
    ended = time.time()
    stop.set()
    watcher.join(timeout=5)
    out = capsys.readouterr().out
    assert code == 1, out
    assert re.search(rf"failed step: +{failing_step}\n", out), out
    return re.search(r"reason: +(.+)\n", out).group(1), re.search(r"step log: +(\S+)", out).group(1), ended


def test_a_data_error_in_convert_fails_the_dag_within_10_s_of_the_steps_start(tmp_path, capsys):
    raw = tmp_path / "raw"
    generate("local", str(raw), rows=400, files=1, seed=3)
    (raw / "_MANIFEST.json").unlink()  # a plain Parquet folder: convert checks values, not a manifest
    part = next(raw.glob("*.parquet"))
    kfp_root, root = tmp_path / "kfp", tmp_path / "root"
    reason, log, ended = failed_run(raw, root, kfp_root, "validate", lambda: labels_0_to_9(part), capsys,
                                    "convert")
    assert re.search(rf"DataError: {re.escape(str(part))}: row \d+: column '{LABEL}' has value [2-9] .*"
                     r"\[label_not_binary\]$", reason), reason
    seconds = ended - step_start(log)
    print(f"convert started -> DAG ended: {seconds:.1f} s")
    assert seconds < FAIL_WITHIN_S, f"the DAG ended {seconds:.1f} s after convert started"
    assert "Traceback" not in reason
    published = [u for u in storage.list_uris(str(root)) if "/kfp/" not in u]
    assert published == []  # no shard, no manifest



@pytest.mark.parametrize(("failing_step", "after_step", "split"), [("train", "convert", "train"),
                                                                  ("evaluate", "train", "eval")])
def test_a_data_error_in_a_converted_split_fails_the_dag_within_10_s_of_the_steps_start(
        tmp_path, capsys, failing_step, after_step, split):
    """A published split whose labels break the contract (converted with --skip-checks) swapped in
    after `after_step`: the train step's launcher reads each split's first records before it starts
    torchrun (or asks a cluster for pods); evaluate's reader stops at its first batch. Either way
    the DAG ends without a retry, naming the shard, record and column."""
    import shutil

    from components.common.schema import load_schema
    from components.convert import ConvertSettings
    from components.convert import run as convert

    raw = tmp_path / "raw"
    generate("local", str(raw), rows=400, files=1, seed=4)
    bad_raw = tmp_path / "bad-raw"
    shutil.copytree(raw, bad_raw)
    (bad_raw / "_MANIFEST.json").unlink()
    labels_0_to_9(next(bad_raw.glob("*.parquet")))
    bad = tmp_path / "bad"
    convert(str(bad_raw), load_schema("local"), str(bad), ConvertSettings(shards=4, workers=1, check_values=False))
    kfp_root, root = tmp_path / "kfp", tmp_path / "root"

    def swap_split() -> None:
        published = next(root.glob(f"*/tfrecords/{split}"))
        shutil.rmtree(published)
        shutil.copytree(bad / split, published)

    reason, log, ended = failed_run(raw, root, kfp_root, after_step, swap_split, capsys, failing_step,
                                    "--num-train-steps", "2")
    assert re.search(rf"{split}/part-\d+-of-\d+\.tfrecord\.gz: record \d+: column '{LABEL}' .*\[label_not_binary\]",
                     reason), reason
    seconds = ended - step_start(log)
    print(f"{failing_step} started -> DAG ended: {seconds:.1f} s")
    assert seconds < FAIL_WITHIN_S, f"the DAG ended {seconds:.1f} s after {failing_step} started"
    assert "Traceback" not in reason
    if failing_step == "train":
        assert "torch.distributed.run" not in Path(log).read_text(), "torchrun was started"
        assert not list(root.glob("train-*/model/model")), "a model was exported"
