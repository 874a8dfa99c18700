"""The evaluation config: bundled defaults, strictness, and the CLI's overrides."""

from __future__ import annotations

import pytest

from components.common.errors import ConfigError
from components.evaluate.config import (
    DEFAULT_ENGAGEMENT_WEIGHTS,
    EvaluateConfig,
    config_from_dict,
    load_evaluate_config,
)


def test_bundled_yaml_matches_the_documented_defaults() -> None:
    config = load_evaluate_config()
    assert config == EvaluateConfig()
    assert config.blessing.auroc_tolerance == 0.005
    assert config.ranking.engagement_weights == DEFAULT_ENGAGEMENT_WEIGHTS
    assert config.ranking.engagement_weights["is_report_tweet_clicked"] == -369.0
    assert len(config.ranking.engagement_weights) == 10
    assert config.metrics.threshold_for("is_favorited") is None  # base rate


def test_per_task_thresholds_override_the_default() -> None:
    config = config_from_dict({"metrics": {"threshold": 0.4, "thresholds": {"is_replied": "base_rate",
                                                                             "is_favorited": 0.2}}})
    assert config.metrics.threshold_for("is_replied") is None
    assert config.metrics.threshold_for("is_favorited") == 0.2
    assert config.metrics.threshold_for("is_retweeted") == 0.4


def test_unknown_fields_and_bad_values_fail_with_the_field_path() -> None:
    with pytest.raises(ConfigError, match="metrics.bins: unknown field"):
        config_from_dict({"metrics": {"bins": 10}})
    with pytest.raises(ConfigError, match="blessing.floors"):
        config_from_dict({"blessing": {"floors": {"accuracy": 0.9}}})
    with pytest.raises(ConfigError, match="metrics.thresholds"):
        config_from_dict({"metrics": {"thresholds": {"is_favorited": 1.5}}})
    with pytest.raises(ConfigError, match="metrics.threshold"):
        config_from_dict({"metrics": {"threshold": "median"}})
    with pytest.raises(ConfigError, match="read.batch_size"):
        config_from_dict({"read": {"batch_size": 0}})


def test_config_file_errors_name_the_file(tmp_path) -> None:
    path = tmp_path / "eval.yaml"
    path.write_text("blessing:\n  auroc_tolerance: -1\n")
    with pytest.raises(ConfigError, match=rf"{path}: blessing.auroc_tolerance"):
        load_evaluate_config(path)
