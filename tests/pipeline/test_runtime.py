"""What component bodies rely on: data locations, KFP metrics; the push step's thin call."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from kfp import dsl

from components.common import storage
from components.common.errors import ConfigError
from pipeline import runtime


@given(st.lists(st.text(alphabet="abcdefghij-/0123456789", min_size=1, max_size=30), min_size=2, max_size=6,
                unique=True))
def test_every_artifact_gets_its_own_data_location_under_the_root(uris):
    uris = [f"gs://pr/recap/{u}" for u in uris]
    locations = [runtime.data_location(u, "gs://data/recap") for u in uris]
    assert len(set(locations)) == len(uris)
    assert all(loc.startswith("gs://data/recap/") for loc in locations)
    assert locations == [runtime.data_location(u, "gs://data/recap") for u in uris]  # deterministic


def test_without_a_data_root_data_lives_under_the_artifact_uri():
    assert runtime.data_location("gs://pr/run/convert/tfrecords/", "") == "gs://pr/run/convert/tfrecords"


@pytest.mark.parametrize("root", ["minio://mlpipeline/v2/artifacts/run/validate/statistics",
                                  "s3://bucket/run/convert/tfrecords"])
def test_a_minio_or_s3_pipeline_root_without_data_root_fails_at_once_with_advice(root):
    """KFP standalone's pipeline root is MinIO; storage would take minio://... for a relative path."""
    with pytest.raises(ConfigError, match=r"set the data_root parameter to a gs:// URI") as info:
        runtime.check_data_root(root, "")
    assert root in str(info.value)
    with pytest.raises(ConfigError):
        runtime.data_location(root, "")
    assert runtime.data_location(root, "gs://recap-local/recap").startswith("gs://recap-local/recap/")
    with pytest.raises(ConfigError, match="minio:// is not supported"):
        runtime.check_data_root("gs://pr/a", "minio://mlpipeline/recap")
    runtime.check_data_root("/tmp/kfp/run/validate/statistics", "")  # kfp.local: a local path


def test_record_location_is_read_back_by_consumers(tmp_path):
    out = dsl.Dataset(name="tfrecords", uri=str(tmp_path / "convert" / "tfrecords"), metadata={})
    runtime.record_location(out, "gs://data/x/tfrecords", train_records=10)
    assert storage.read_json(str(tmp_path / "convert/tfrecords/_LOCATION.json"))["data_uri"] == "gs://data/x/tfrecords"
    consumer_view = dsl.Dataset(name="tfrecords", uri=out.uri, metadata=dict(out.metadata))
    assert runtime.data_uri(consumer_view) == "gs://data/x/tfrecords"
    assert runtime.data_uri(dsl.Dataset(name="t", uri="gs://pr/a/", metadata={})) == "gs://pr/a"


def test_push_step_publishes_the_models_data_location(tmp_path):
    """The KFP push body is a thin call: the model's data location goes to components.push."""
    from pipeline.images import ImageSettings
    from pipeline.kfp_components import make_components
    from tests.push.test_push import blessed_evaluation

    data = tmp_path / "data/train-1/model"
    storage.write_text(str(data / "weights.pt"), "w")
    model = dsl.Model(name="model", uri=str(tmp_path / "train/model"), metadata={"data_uri": str(data)})
    blessed_evaluation(str(tmp_path / "evaluate"), True)  # evaluate/evaluation with blessing.json and manifest
    evaluation = dsl.Artifact(name="evaluation", uri=str(tmp_path / "evaluate/evaluation"), metadata={})
    push = make_components(ImageSettings(registry="r.example", tag="1")).push.python_func
    outputs = push(model=model, evaluation=evaluation, serving_uri="", data_root=str(tmp_path / "data"), version="run-7")
    assert outputs.serving_model_uri == str(tmp_path / "data/serving/run-7")
    latest = storage.read_json(str(tmp_path / "data/serving/LATEST"))
    assert latest["source_uri"] == str(data) and latest["evaluation_uri"] == evaluation.uri
    with pytest.raises(ConfigError, match="serving_uri"):
        push(model=model, evaluation=evaluation, serving_uri="", data_root="", version="run-8")


def test_kfp_metrics_and_classification_artifacts():
    metrics = dsl.Metrics(name="m", uri="", metadata={})
    runtime.log_scalars(metrics, {"auroc": 0.7, "blessed": True, "nan": float("nan"), "name": "x"})
    assert metrics.metadata == {"auroc": 0.7, "blessed": 1.0}
    classification = dsl.ClassificationMetrics(name="c", uri="", metadata={})
    task = runtime.log_classification(classification, {
        "is_favorited": {"roc": [{"fpr": 0.0, "tpr": 0.0, "threshold": float("inf")}, {"fpr": 1.0, "tpr": 1.0, "threshold": 0.0}],
                         "confusion_matrix": {"categories": ["negative", "positive"], "matrix": [[5, 1], [2, 3]]}},
        "is_replied": {"roc": [], "confusion_matrix": {}},
    })
    assert task == "is_favorited" and classification.metadata["task"] == "is_favorited"
    assert len(classification.metadata["confidenceMetrics"]) == 2
    assert classification.metadata["confusionMatrix"]["rows"] == [{"row": [5, 1]}, {"row": [2, 3]}]


def test_anomaly_summary_names_codes_and_columns():
    class A:
        def __init__(self, code, column, message, examples=()):
            self.code, self.column, self.message, self.examples = code, column, message, examples

    assert runtime.anomaly_summary([], "gs://b/raw") == "ok"
    text = runtime.anomaly_summary([A("unreadable_file", None, "part-0 truncated")] * 25, "gs://b/raw")
    assert text.startswith("25 validation error(s) in gs://b/raw; first: unreadable_file (part-0 truncated)\n")
    assert "unreadable_file -: part-0 truncated" in text and text.endswith("... and 5 more")
    labels = A("label_not_binary", "is_clicked", "a label value outside {0, 1}",
               ({"file": "gs://b/raw/p-1.parquet", "row": 2},))
    assert runtime.anomaly_summary([labels], "gs://b/raw").splitlines()[0] == (
        "1 validation error(s) in gs://b/raw; first: label_not_binary at gs://b/raw/p-1.parquet row 2 "
        "column 'is_clicked' (a label value outside {0, 1})")


def test_retry_transient_repeats_only_an_outage_and_fails_a_data_error_at_once(monkeypatch):
    from components.common.errors import DataError, StorageUnavailable

    monkeypatch.setenv(runtime.STEP_BACKOFF_ENV, "0")
    calls = []

    def outage_then_ok():
        calls.append(1)
        if len(calls) == 1:
            raise StorageUnavailable("gs://b/x: gave up after 10 attempts: 503")
        return "done"

    assert runtime.retry_transient(outage_then_ok, "convert") == "done" and len(calls) == 2

    calls.clear()

    def bad_data():
        calls.append(1)
        raise DataError("raw/part-0.parquet: row 3: column 'label' has value 7 [label_not_binary]")

    with pytest.raises(DataError):
        runtime.retry_transient(bad_data, "convert")
    assert len(calls) == 1

    calls.clear()
    monkeypatch.setenv(runtime.STEP_ATTEMPTS_ENV, "2")

    def always_down():
        calls.append(1)
        raise StorageUnavailable("gs://b/x: gave up")

    with pytest.raises(StorageUnavailable):
        runtime.retry_transient(always_down, "convert")
    assert len(calls) == 2
