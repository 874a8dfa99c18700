"""The whole DAG on this machine through kfp.local: a corrupted input stops at validation;
good data on gs:// (the GCS emulator) ends with a blessed, pushed model."""

from __future__ import annotations

import json

import pytest

from components.cli import main
from components.common import storage
from components.datagen.generate import generate
from pipeline.local_run import run_local

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


def test_full_dag_on_gcs_ends_with_a_blessed_pushed_model(gcs_bucket, tmp_path):
    raw = f"{gcs_bucket}/raw"
    generate("local", raw, rows=20000, files=2, seed=0)
    root = f"{gcs_bucket}/recap"

    run = run_local(raw, root, "configs/local.yaml", num_train_steps=60, pipeline_root=str(tmp_path / "kfp"))

    assert run.succeeded, run.failed_tasks
    assert run.validation_passed is True and run.blessed is True
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
