"""The evaluation config (`configs/evaluate.yaml`): reading, metrics, ranking score, blessing."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import Field, field_validator

from components.common.config import StrictModel, load_config, parse_config, repo_configs_dir
from components.metrics.binary import DIRECTIONS

# The product's final score: sum of weight * probability, with these published weights (April 2023).
DEFAULT_ENGAGEMENT_WEIGHTS = {
    "is_favorited": 0.5,
    "is_retweeted": 1.0,
    "is_replied": 13.5,
    "is_profile_clicked_and_profile_engaged": 12.0,
    "is_video_playback_50": 0.005,
    "is_replied_reply_engaged_by_author": 75.0,
    "is_good_clicked_convo_desc_favorited_or_replied": 11.0,
    "is_good_clicked_convo_desc_v2": 10.0,
    "is_negative_feedback_v2": -74.0,
    "is_report_tweet_clicked": -369.0,
}


class ReadConfig(StrictModel):
    batch_size: int = Field(default=1024, ge=1)
    num_parallel_reads: int = Field(default=2, ge=1)
    max_examples: int | None = Field(default=None, ge=1, description="stop after this many (smoke runs)")
    cache_dir: str | None = None
    skip_corrupt: bool = False


class MetricsConfig(StrictModel):
    use_weights: bool = Field(
        default=True,
        description="weight examples by the downsampling weights and score calibrated "
                    "probabilities; false: unit weights and raw probabilities",
    )
    num_bins: int = Field(default=32768, ge=256, le=1 << 22)
    threshold: float | Literal["base_rate"] = Field(
        default="base_rate",
        description="confusion-matrix threshold on the scored probability, or base_rate: the "
                    "task's (weighted) positive rate in the eval data",
    )
    thresholds: dict[str, float | Literal["base_rate"]] = Field(default_factory=dict,
                                                                description="per-task override")
    curve_points: int = Field(default=200, ge=10)
    reliability_buckets: int = Field(default=20, ge=2)

    @field_validator("threshold")
    @classmethod
    def _threshold_in_unit_interval(cls, value: float | str) -> float | str:
        if not isinstance(value, str) and not 0 < value < 1:
            raise ValueError(f"must be in (0, 1) or base_rate, got {value}")
        return value

    @field_validator("thresholds")
    @classmethod
    def _in_unit_interval(cls, value: dict[str, float | str]) -> dict[str, float | str]:
        for task, threshold in value.items():
            if not isinstance(threshold, str) and not 0 < threshold < 1:
                raise ValueError(f"threshold of {task} must be in (0, 1) or base_rate, got {threshold}")
        return value

    def threshold_for(self, task: str) -> float | None:
        """The numeric threshold of a task, or None for its base rate."""
        value = self.thresholds.get(task, self.threshold)
        return None if value == "base_rate" else float(value)


class RankingConfig(StrictModel):
    enabled: bool = True
    engagement_weights: dict[str, float] = Field(default_factory=lambda: dict(DEFAULT_ENGAGEMENT_WEIGHTS))
    user_feature: str = "meta__user_id"
    gauc_max_examples: int = Field(default=500_000, ge=1)
    gauc_max_examples_per_user: int = Field(default=1024, ge=2)


class BaselineComparison(StrictModel):
    """How much worse than the baseline (the production model) a task's metric may be."""

    tolerance: float = Field(ge=0)
    direction: Literal["higher", "lower"] | None = Field(
        default=None, description="which way is better; default: the metric's own (higher, log_loss lower)")


class Bounds(StrictModel):
    """Absolute limits a task's metric must stay within."""

    min: float | None = None
    max: float | None = None


class BlessingConfig(StrictModel):
    baseline: dict[str, BaselineComparison] = Field(
        default_factory=lambda: {"auroc": BaselineComparison(tolerance=0.005)},
        description="metric -> tolerance (and direction) against the baseline's metrics.json")
    bounds: dict[str, Bounds] = Field(default_factory=dict, description="metric -> min/max, every task")
    task_bounds: dict[str, dict[str, Bounds]] = Field(default_factory=dict, description="task -> metric -> min/max")

    @field_validator("baseline", "bounds")
    @classmethod
    def _known_metrics(cls, value: dict[str, Any]) -> dict[str, Any]:
        _check_metric_names(value)
        return value

    @field_validator("task_bounds")
    @classmethod
    def _known_task_metrics(cls, value: dict[str, dict[str, Bounds]]) -> dict[str, dict[str, Bounds]]:
        for bounds in value.values():
            _check_metric_names(bounds)
        return value

    def direction(self, metric: str) -> str:
        """Which way is better for `metric` ("higher" or "lower"): as configured, else by its nature."""
        comparison = self.baseline.get(metric)
        return (comparison.direction if comparison else None) or DIRECTIONS[metric]


def _check_metric_names(named: dict[str, Any]) -> None:
    unknown = sorted(set(named) - set(DIRECTIONS))
    if unknown:
        raise ValueError(f"unknown metric {', '.join(unknown)}; one of {', '.join(DIRECTIONS)}")


class EvaluateConfig(StrictModel):
    read: ReadConfig = Field(default_factory=ReadConfig)
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)
    ranking: RankingConfig = Field(default_factory=RankingConfig)
    blessing: BlessingConfig = Field(default_factory=BlessingConfig)


def default_config_path() -> str:
    return str(repo_configs_dir() / "evaluate.yaml")


def load_evaluate_config(path: str | os.PathLike[str] | None = None,
                         overrides: Mapping[str, Any] | None = None) -> EvaluateConfig:
    """Load a YAML config (the bundled `configs/evaluate.yaml` when no path is given), apply
    `dotted.key: value` overrides, validate. The CLI and the KFP component both come through here."""
    return load_config(path or default_config_path(), EvaluateConfig, overrides)


def config_from_dict(data: dict, source: str = "<evaluate config>") -> EvaluateConfig:
    return parse_config(data, EvaluateConfig, source)
