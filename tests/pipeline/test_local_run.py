"""The whole DAG on this machine through kfp.local: a corrupted input stops at validation;
good data on gs:// (the GCS emulator behind a fault proxy) ends with a blessed, pushed model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from components.cli import main
from components.common import storage
from components.datagen.generate import generate
from pipeline.local_run import run_local
from pipeline.runtime import STEP_BACKOFF_ENV
from tests.common.faulty_proxy import FaultyProxy

pytestmark = pytest.mark.integration


def _tree(uri: str) -> list[str]:
    return storage.list_uris(uri)


def test_corrupted_raw_data_stops_at_validation_and_publishes_nothing(tmp_path, capsys):
    raw = str(tmp_path / "raw")
    result = generate("local", raw, rows=400, files=2, seed=1)
    victim = result.files[0]
    data = storage.read_bytes(victim)
    storage.write_bytes(victim, data[: len(data) // 2])  # a truncated upload
    root = str(tmp_path / "root")

    code = main(["pipeline", "run", "--raw", raw, "--root", root, "--num-train-steps", "5"])

    assert code == 1  # a failed check
    captured = capsys.readouterr()
    run = json.loads(captured.out)  # stdout is only the result; step logs went to stderr
    assert "pipeline stopped by data validation: 1 validation error(s)" in captured.err
    assert "unreadable_file" in captured.err
    assert not run["succeeded"]
    assert run["failed_tasks"][0] == "validation-gate"
    assert run["validation_passed"] is False
    report = storage.read_text(run["validation_report"])
    assert "unreadable_file" in report or "could not be read" in report
    written = [u for u in _tree(root) if "/kfp/" not in u]
    assert written == []  # no TFRecords, no checkpoints, no model, no serving copy
    assert run["model_uri"] is None and run["blessed"] is None and run["serving_model_uri"] is None


def test_summary_of_a_failed_run_names_the_step_its_reason_and_its_log(tmp_path, capsys):
    """Labels 0..9: the run stops at the validation gate within seconds (no KFP retry), and
    `--summary` says where: file, row, column, and the step's log."""
    import re

    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    raw = tmp_path / "raw"
    generate("local", str(raw), rows=400, files=1, seed=2)
    part = next(raw.glob("*.parquet"))
    table = pq.read_table(part)
    index = table.schema.get_field_index("is_bookmarked")
    table = table.set_column(index, table.schema.field(index), pa.array(np.arange(len(table)) % 10, table.schema.field(index).type))
    pq.write_table(table, part)
    (raw / "_MANIFEST.json").unlink()

    code = main(["pipeline", "run", "--raw", str(raw), "--root", str(tmp_path / "root"), "--summary"])

    out = capsys.readouterr().out
    assert code == 1
    assert re.search(r"failed step: +validation-gate\n", out), out
    reason = re.search(r"reason: +(.+)\n", out).group(1)
    assert re.search(rf"first: label_not_binary at {re.escape(str(part))} row 2 column 'is_bookmarked'", reason), out
    log = re.search(r"step log: +(\S+)", out).group(1)
    assert reason in storage.read_text(log)
    seconds = float(re.search(r"run FAILED at .* in (\d+) s", out).group(1))
    assert seconds < 60  # one pass through validate and the gate, no retries (~6 s on an idle machine)


def kill_step(marker: str = "executor_main") -> list[int]:
    """SIGKILL the running kfp.local step (every process of it), as a preempted pod dies."""
    import psutil

    steps = [p for p in psutil.Process().children(recursive=True) if marker in " ".join(p.cmdline())]
    victims = {p.pid: p for step in steps for p in (step, *step.children(recursive=True))}
    for process in victims.values():
        process.kill()
    return sorted(victims)


def test_killed_convert_then_a_rerun_through_storage_faults_ends_with_a_blessed_pushed_model(
        gcs_emulator, gcs_bucket, tmp_path, monkeypatch, caplog):
    """The transient faults of docs/architecture.md "Retries", on gs:// (the GCS emulator):

    1. convert's process is killed in its first shard upload (a preempted pod): no KFP retry for
       a data step, so the run fails at convert with nothing published, and
    2. the rerun reuses validate's cached outputs while every step talks to GCS through the fault
       proxy: 3% of requests answered 503 or dropped after the emulator executed them (the storage
       client retries each), and a 1.5 s outage from convert's first shard upload, longer than the
       client's 4 retries, so convert gives up with a transient error and reruns its work
       (pipeline.runtime.retry_transient). The run ends as it would without faults."""
    import logging

    raw = f"{gcs_bucket}/raw"
    generated = generate("local", raw, rows=20000, files=2, seed=0)
    root, kfp_root = f"{gcs_bucket}/recap", str(tmp_path / "kfp")
    first_shard_upload = lambda method, path: method == "POST" and "tfrecord" in path  # noqa: E731
    killed: list[int] = []

    def preempt(method: str, path: str) -> None:
        if not killed and first_shard_upload(method, path):
            killed.extend(kill_step())

    with FaultyProxy(gcs_emulator, fault_rate=0.0, on_request=preempt) as proxy:
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", proxy.url)  # the steps' subprocesses inherit it
        first = run_local(raw, root, "configs/local.yaml", num_train_steps=60, pipeline_root=kfp_root,
                          enable_caching=True)
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs_emulator)
    assert killed and not first.succeeded and first.failed_tasks[0] == "convert", first.failed_tasks
    assert "ended without an error message (killed?)" in first.failure.reason, first.failure
    assert not [u for u in _tree(root) if u.endswith("_MANIFEST.json")], "convert published a split"

    caplog.set_level(logging.INFO)
    with FaultyProxy(gcs_emulator, fault_rate=0.03, seed=5, outage_s=1.5, outage_when=first_shard_upload) as proxy:
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", proxy.url)
        monkeypatch.setenv("RECAP_STORAGE_RETRIES", "4")  # the client's retries: at most 0.7 s of sleeps
        monkeypatch.setenv(STEP_BACKOFF_ENV, "3")  # a step's rerun waits for the outage to pass
        storage._clients.clear()
        try:
            run = run_local(raw, root, "configs/local.yaml", num_train_steps=60, pipeline_root=kfp_root,
                            enable_caching=True)
        finally:
            monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs_emulator)
            storage._clients.clear()

    assert run.succeeded, (run.failed_tasks, run.failure)
    assert "Task validate cache hit" in caplog.text  # the rerun did not redo what had succeeded
    assert proxy.counts["503"] > 0 and proxy.counts["drop"] > 0 and proxy.counts["outage"] >= 4, proxy.counts
    convert_log = (Path(run.logs_dir) / "convert.log").read_text()
    assert "convert: transient fault (attempt 1/3), retrying" in convert_log, convert_log[-3000:]
    objects = _tree(root)
    splits = [storage.parent(u) for u in objects if u.endswith("/_MANIFEST.json") and "/tfrecords/" in u]
    assert len(splits) == 2, splits
    for split in splits:  # convert's failed attempt left no shard beside the listed ones
        listed = {f["path"] for f in storage.read_json(storage.join(split, "_MANIFEST.json"))["files"]}
        assert {storage.relative_to(u, split) for u in objects if u.startswith(split + "/") and
                not u.endswith("_MANIFEST.json")} == listed
    records = sum(storage.read_json(storage.join(split, "_MANIFEST.json"))["total_records"] for split in splits)
    assert records == generated.rows  # every row converted once
    assert first.validation_passed is True and run.blessed is True  # the rerun's validate is the cached one
    objects = _tree(root)
    assert any(u.endswith(".tfrecord.gz") or ".tfrecord" in u for u in objects), objects[:10]
    assert any(u.endswith("train/_MANIFEST.json") for u in objects)
    assert run.model_uri.startswith(f"{root}/") and storage.list_uris(run.model_uri)
    latest = storage.read_json(f"{root}/serving/LATEST")
    assert latest["model_uri"] == run.serving_model_uri
    assert run.serving_model_uri.startswith(f"{root}/serving/")
    pushed = {storage.relative_to(u, run.serving_model_uri) for u in storage.list_uris(run.serving_model_uri)}
    source = {storage.relative_to(u, run.model_uri) for u in storage.list_uris(run.model_uri)}
    assert pushed == source
    assert storage.read_text(run.report).lstrip().lower().startswith("<!doctype html")
    assert storage.read_json(run.metrics)["tasks"]
    _evaluate_and_push_with_a_stricter_config(run, root, f"{gcs_bucket}/strict-serving", tmp_path)



def _evaluate_and_push_with_a_stricter_config(run, root: str, serving: str, tmp_path) -> None:
    """The DAG's evaluate step takes the blessing's criteria from the YAML it is given, and its
    push step refuses what that blessing refused."""
    from kfp import dsl

    from components.common.errors import CheckFailed
    from pipeline.images import ImageSettings
    from pipeline.kfp_components import make_components

    eval_split = next(u for u in _tree(root) if u.endswith("/eval/_MANIFEST.json"))
    data = eval_split.removesuffix("/eval/_MANIFEST.json")
    strict = tmp_path / "strict.yaml"
    strict.write_text("blessing:\n  baseline: {}\n  bounds: {auroc: {min: 0.999}}\n")
    ops = make_components(ImageSettings(registry="r.example", tag="1"))
    model = dsl.Model(name="model", uri=str(tmp_path / "train/model"), metadata={"data_uri": run.model_uri})
    evaluation = dsl.Artifact(name="evaluation", uri=str(tmp_path / "evaluate/evaluation"), metadata={})
    verdict = ops.evaluate.python_func(
        model=model, tfrecords=dsl.Dataset(name="tfrecords", uri=str(tmp_path / "t"), metadata={"data_uri": data}),
        evaluate_config=str(strict), baseline_metrics_uri="", evaluation=evaluation,
        metrics=dsl.Metrics(name="m", uri=str(tmp_path / "m"), metadata={}),
        classification=dsl.ClassificationMetrics(name="c", uri=str(tmp_path / "c"), metadata={}),
        report=dsl.HTML(name="r", uri=str(tmp_path / "r.html"), metadata={}))
    assert verdict.blessed is False and "below the minimum 0.999" in verdict.reason
    with pytest.raises(CheckFailed, match="not blessed"):
        ops.push.python_func(model=model, evaluation=evaluation, serving_uri=serving, data_root=root,
                             version="run-strict")
    assert _tree(serving) == []
