"""`run`: load the exported model once, stream the eval split through it, write the verdict.

Which predictions are scored: with `metrics.use_weights` (the default) every metric weights
examples by the downsampling weights `y/pos_rate + (1-y)/neg_rate` the reader provides and
scores `calibrated_probabilities`, the model's estimate on un-downsampled traffic; weighted
labels and calibrated predictions then describe the same population, so log loss, RCE and
calibration are meaningful. Without weights the raw `probabilities` are scored against the
(downsampled) data as is. With rates of 1.0 both choices are identical. AUROC is unchanged
by the calibration (a monotone map), and the ranking score uses the same predictions.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from components.common.errors import ConfigError, DataError
from components.common.logs import Throughput, format_metrics
from components.evaluate.blessing import Blessing, bless, read_baseline
from components.evaluate.config import EvaluateConfig
from components.evaluate.outputs import write_outputs
from components.evaluate.ranking import (
    GroupedAUROC,
    GroupedAUROCAccumulator,
    engagement_value,
    ranking_score,
)
from components.evaluate.report import render_report
from components.metrics.binary import BinaryMetricAccumulator, TaskMetrics, finite_or_none

log = logging.getLogger(__name__)
LOG_EVERY_S = 10.0


@dataclass(frozen=True)
class EvaluationResult:
    out_uri: str
    blessed: bool
    blessing: Blessing
    tasks: tuple[TaskMetrics, ...]
    ranking: GroupedAUROC | None
    examples: int
    examples_per_s: float
    files: tuple[str, ...]

    def task(self, name: str) -> TaskMetrics:
        return next(t for t in self.tasks if t.task == name)


def check_task_names(config: EvaluateConfig, task_names: list[str], source: str = "evaluate config") -> None:
    """Every task the config names must be a task of the model's schema."""
    known = set(task_names)
    named = {
        "metrics.thresholds": config.metrics.thresholds,
        "ranking.engagement_weights": config.ranking.engagement_weights if config.ranking.enabled else {},
        "blessing.task_bounds": config.blessing.task_bounds,
    }
    for field, mapping in named.items():
        unknown = sorted(set(mapping) - known)
        if unknown:
            raise ConfigError(f"{source}: {field}: unknown task {', '.join(unknown)}; "
                              f"the model's tasks are {', '.join(task_names)}")


class StreamingEvaluator:
    """All per-task accumulators plus the ranking GAUC, fed one batch of model outputs at a time."""

    def __init__(self, task_names: list[str], config: EvaluateConfig) -> None:
        check_task_names(config, task_names)
        self.task_names = list(task_names)
        self.config = config
        m = config.metrics
        self.prediction_key = "calibrated_probabilities" if m.use_weights else "probabilities"
        self.accumulators = [
            BinaryMetricAccumulator(task, m.num_bins, m.threshold_for(task),
                                    m.curve_points, m.reliability_buckets)
            for task in self.task_names
        ]
        r = config.ranking
        self.engagement_weights = np.array([r.engagement_weights.get(t, 0.0) for t in self.task_names])
        self.gauc = GroupedAUROCAccumulator(r.gauc_max_examples, r.gauc_max_examples_per_user) if r.enabled else None
        self.score_sum = 0.0
        self.examples = 0

    def _user_ids(self, batch: Any, n: int) -> np.ndarray:
        feature = self.config.ranking.user_feature
        kjt = batch.sparse_features
        keys = list(kjt.keys())
        if feature not in keys:
            raise DataError(f"ranking.user_feature {feature!r} is not in the batch's ID features {keys}")
        jagged = kjt[feature]
        lengths = jagged.lengths()
        if not bool((lengths == 1).all()):
            raise DataError(f"{feature}: expected exactly one user id per example")
        return jagged.values()[:n].detach().cpu().numpy()

    def update(self, batch: Any, outputs: dict[str, torch.Tensor], n: int | None = None) -> None:
        """Score the batch (only its first `n` examples when given, for `read.max_examples`)."""
        n = batch.batch_size if n is None else n
        predictions = outputs[self.prediction_key][:n].detach().to(torch.float64).cpu().numpy()
        labels = batch.labels[:n].detach().cpu().numpy()
        weights = batch.weights[:n].detach().cpu().numpy() if self.config.metrics.use_weights else None
        if predictions.shape != labels.shape:
            raise DataError(f"model output {self.prediction_key} has shape {predictions.shape}, "
                            f"labels {labels.shape}: model and data disagree on the tasks")
        for index, accumulator in enumerate(self.accumulators):
            accumulator.update(predictions[:, index], labels[:, index],
                               None if weights is None else weights[:, index])
        if self.gauc is not None:
            scores = ranking_score(predictions, self.engagement_weights)
            self.score_sum += float(np.nansum(scores))
            self.gauc.update(self._user_ids(batch, n), scores, engagement_value(labels, self.engagement_weights))
        self.examples += len(labels)

    @property
    def state_nbytes(self) -> int:
        """Bytes held by the metric state (bounded: histograms plus the GAUC budget)."""
        return sum(a.nbytes for a in self.accumulators) + (self.gauc.nbytes if self.gauc else 0)

    def finish(self) -> tuple[tuple[TaskMetrics, ...], GroupedAUROC | None]:
        tasks = tuple(a.compute() for a in self.accumulators)
        return tasks, self.gauc.compute() if self.gauc is not None else None

    def metrics_document(self, tasks: tuple[TaskMetrics, ...], ranking: GroupedAUROC | None,
                         **info: Any) -> dict[str, Any]:
        """metrics.json: run info, per-task metrics with curves, ranking (NaN as null)."""
        document: dict[str, Any] = {
            **info,
            "examples": self.examples,
            "weighted": self.config.metrics.use_weights,
            "prediction": self.prediction_key,
            "tasks": {t.task: t.to_json() for t in tasks},
            "ranking": None,
        }
        if ranking is not None:
            document["ranking"] = {
                **ranking.__dict__,
                "mean_score": self.score_sum / self.examples if self.examples else math.nan,
                "engagement_weights": dict(zip(self.task_names, self.engagement_weights.tolist(), strict=True)),
            }
        return finite_or_none(document)


def _total_examples(data_uri: str) -> int | None:
    from components.common.manifest import read_manifest

    try:
        manifest, _ = read_manifest(data_uri)
    except Exception:  # the reader reports a bad manifest properly; this is only for the bar
        return None
    return manifest.total_records


def run(model_uri: str, data_uri: str, out_uri: str, config: EvaluateConfig,
        baseline_uri: str | None = None) -> EvaluationResult:
    """Evaluate the exported model at `model_uri` on the split at `data_uri`; write to `out_uri`."""
    from components.exported_model.model_dir import load_exported_model
    from components.records.reader import ReaderOptions, read_batches

    baseline = read_baseline(baseline_uri) if baseline_uri else None  # fail before the long part
    exported = load_exported_model(model_uri)
    schema = exported.schema
    model = exported.model.eval()
    evaluator = StreamingEvaluator(schema.task_names, config)
    options = ReaderOptions(batch_size=config.read.batch_size, shuffle=False, repeat=False,
                            drop_remainder=False, skip_corrupt=config.read.skip_corrupt,
                            cache_dir=config.read.cache_dir, num_parallel_reads=config.read.num_parallel_reads)
    limit = config.read.max_examples
    total = _total_examples(data_uri)
    total = min(total, limit) if total is not None and limit else total or limit
    throughput = Throughput()
    last_log = time.perf_counter()
    log.info("evaluating %s on %s (%s examples, scoring %s)", model_uri, data_uri,
             total if total is not None else "unknown", evaluator.prediction_key)
    with torch.inference_mode(), tqdm(total=total, unit="ex", desc="evaluate", mininterval=2.0, disable=None) as bar:
        for batch in read_batches(data_uri, schema, options):
            outputs = model(batch)
            keep = batch.batch_size if limit is None else min(batch.batch_size, limit - evaluator.examples)
            evaluator.update(batch, outputs, keep)
            throughput.add(keep)
            bar.update(keep)
            if time.perf_counter() - last_log >= LOG_EVERY_S:
                last_log = time.perf_counter()
                log.info(format_metrics(examples=throughput.count, examples_per_s=throughput.per_second,
                                        metric_state_mb=evaluator.state_nbytes / 1e6))
            if limit is not None and evaluator.examples >= limit:
                break
    if evaluator.examples == 0:
        raise DataError(f"{data_uri}: the eval split has no examples")
    seconds, rate = throughput.seconds, throughput.per_second
    log.info(format_metrics(examples=evaluator.examples, seconds=seconds, examples_per_s=rate,
                            metric_state_mb=evaluator.state_nbytes / 1e6))
    tasks, ranking = evaluator.finish()
    metrics = evaluator.metrics_document(
        tasks, ranking, model_uri=model_uri, data_uri=data_uri, schema=schema.name,
        schema_hash=schema.hash, seconds=seconds, examples_per_s=rate)
    blessing = bless(metrics, config.blessing, baseline, baseline_uri)
    blessing_json = blessing.to_json()
    files = write_outputs(out_uri, schema.hash, metrics, blessing_json,
                          render_report(metrics, blessing_json, baseline))
    log.info("%s: %s", "BLESSED" if blessing.blessed else "NOT BLESSED", blessing.reason)
    return EvaluationResult(out_uri, blessing.blessed, blessing, tasks, ranking, evaluator.examples, rate,
                            tuple(files))

