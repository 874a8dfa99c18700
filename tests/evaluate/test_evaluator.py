"""The streaming evaluator over RecapBatches and model outputs, and the documents it writes."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from components.common import storage
from components.common.errors import ConfigError, DataError
from components.common.manifest import read_manifest, verify_manifest
from components.evaluate.blessing import bless
from components.evaluate.config import EvaluateConfig
from components.evaluate.constants import (
    BLESSING_FILE,
    CLASSIFICATION_FILE,
    KFP_METRICS_FILE,
    METRICS_FILE,
    REPORT_FILE,
)
from components.evaluate.evaluator import StreamingEvaluator
from components.evaluate.outputs import write_outputs
from components.evaluate.report import render_report
from tests.evaluate.conftest import synthetic_batches


def evaluate_synthetic(schema, config: EvaluateConfig, n: int = 6_000, **kwargs):
    evaluator = StreamingEvaluator(schema.task_names, config)
    kept = []
    for batch, outputs in synthetic_batches(schema, n, 512, **kwargs):
        evaluator.update(batch, outputs)
        kept.append((batch, outputs))
    return evaluator, kept


@pytest.mark.parametrize("use_weights", [True, False])
def test_each_task_column_is_scored_with_the_configured_predictions_and_weights(local_schema, use_weights) -> None:
    config = EvaluateConfig()
    config.metrics.use_weights = use_weights
    evaluator, kept = evaluate_synthetic(local_schema, config, neg_rate=0.25)
    tasks, ranking = evaluator.finish()
    key = "calibrated_probabilities" if use_weights else "probabilities"
    labels = np.concatenate([b.labels.numpy() for b, _ in kept])
    weights = np.concatenate([b.weights.numpy() for b, _ in kept])
    predictions = np.concatenate([o[key].numpy() for _, o in kept])
    for index, metrics in enumerate(tasks):
        assert metrics.task == local_schema.task_names[index]
        w = weights[:, index] if use_weights else None
        assert metrics.auroc == pytest.approx(roc_auc_score(labels[:, index], predictions[:, index],
                                                            sample_weight=w), abs=1e-3)
        expected_mean = np.average(predictions[:, index], weights=w)
        assert metrics.mean_prediction == pytest.approx(expected_mean, rel=1e-6)
    assert ranking is not None and 0.5 < ranking.gauc < 1.0


def test_only_the_first_n_examples_of_a_batch_are_scored(local_schema) -> None:
    evaluator = StreamingEvaluator(local_schema.task_names, EvaluateConfig())
    batch, outputs = next(synthetic_batches(local_schema, 100, 100))
    evaluator.update(batch, outputs, 30)
    tasks, ranking = evaluator.finish()
    assert evaluator.examples == 30 and tasks[0].count == 30 and ranking.sampled_examples == 30


def test_config_naming_an_unknown_task_fails_before_any_work(local_schema) -> None:
    config = EvaluateConfig()
    config.ranking.engagement_weights = {"is_favorited": 0.5, "is_liked": 1.0}
    with pytest.raises(ConfigError, match="ranking.engagement_weights: unknown task is_liked"):
        StreamingEvaluator(local_schema.task_names, config)


def test_mismatched_model_outputs_are_a_data_error(local_schema) -> None:
    evaluator = StreamingEvaluator(local_schema.task_names, EvaluateConfig())
    batch, outputs = next(synthetic_batches(local_schema, 10, 10))
    outputs["calibrated_probabilities"] = outputs["calibrated_probabilities"][:, :3]
    with pytest.raises(DataError, match="model and data disagree"):
        evaluator.update(batch, outputs)


def write_synthetic(schema, out_uri: str, baseline=None) -> dict:
    evaluator, _ = evaluate_synthetic(schema, EvaluateConfig(), n=3_000)
    tasks, ranking = evaluator.finish()
    metrics = evaluator.metrics_document(tasks, ranking, model_uri="m", data_uri="d",
                                         examples_per_s=1000.0, seconds=3.0)
    blessing = bless(metrics, EvaluateConfig().blessing, baseline).to_json()
    write_outputs(out_uri, schema.hash, metrics, blessing, render_report(metrics, blessing, baseline))
    return metrics


def check_outputs(out_uri: str, schema) -> None:
    manifest, directory = read_manifest(out_uri)
    verify_manifest(manifest, directory, check_sha256=True)
    assert {f.path for f in manifest.files} == {METRICS_FILE, KFP_METRICS_FILE, CLASSIFICATION_FILE,
                                                REPORT_FILE, BLESSING_FILE}
    for name in (METRICS_FILE, KFP_METRICS_FILE, CLASSIFICATION_FILE, BLESSING_FILE):
        # Strict JSON (no NaN tokens) so any consumer can read it.
        json.loads(storage.read_text(storage.join(out_uri, name)),
                   parse_constant=lambda c, name=name: pytest.fail(f"{name} has {c}"))
    scalars = storage.read_json(storage.join(out_uri, KFP_METRICS_FILE))
    assert all(isinstance(v, float) for v in scalars.values())
    assert {f"{t}.auroc" for t in schema.task_names} <= set(scalars) and "ranking.gauc" in scalars
    assert scalars["blessed"] in (0.0, 1.0)
    classification = storage.read_json(storage.join(out_uri, CLASSIFICATION_FILE))
    for task in schema.task_names:
        roc = classification[task]["roc"]
        assert set(roc[0]) == {"fpr", "tpr", "threshold"} and len(roc) > 10
        matrix = classification[task]["confusion_matrix"]
        assert matrix["categories"] == ["negative", "positive"]
        assert sum(map(sum, matrix["matrix"])) == 3_000
    blessing = storage.read_json(storage.join(out_uri, BLESSING_FILE))
    assert set(blessing["tasks"]) == set(schema.task_names) and blessing["reason"]


def test_outputs_are_complete_strict_json_and_listed_in_a_manifest(local_schema, tmp_path) -> None:
    out = str(tmp_path / "eval")
    write_synthetic(local_schema, out)
    check_outputs(out, local_schema)


@pytest.mark.integration
def test_outputs_on_gcs(local_schema, gcs_bucket) -> None:
    out = f"{gcs_bucket}/runs/1/eval"
    metrics = write_synthetic(local_schema, out)
    check_outputs(out, local_schema)
    # The written metrics.json serves as the next run's baseline straight from the bucket.
    from components.evaluate.blessing import read_baseline

    assert read_baseline(out)["tasks"] == json.loads(json.dumps(metrics["tasks"]))


def test_peak_memory_of_the_metric_state_does_not_grow_with_10x_the_data(local_schema) -> None:
    import tracemalloc

    def peak(n: int) -> int:
        config = EvaluateConfig()
        config.ranking.gauc_max_examples = 2_000  # the budget, reached by both sizes
        batches = synthetic_batches(local_schema, n, 500, seed=11, users=n // 20)  # more data, more users
        tracemalloc.start()
        evaluator = StreamingEvaluator(local_schema.task_names, config)
        for batch, outputs in batches:
            evaluator.update(batch, outputs)
        evaluator.finish()
        _, top = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        return top

    small, large = peak(4_000), peak(40_000)
    assert large <= 1.10 * small, (small, large)
