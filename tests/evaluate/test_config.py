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
    assert config.blessing.baseline["auroc"].tolerance == 0.005
    assert config.blessing.direction("auroc") == "higher" and config.blessing.direction("log_loss") == "lower"
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
    with pytest.raises(ConfigError, match="blessing.bounds"):
        config_from_dict({"blessing": {"bounds": {"accuracy": {"min": 0.9}}}})
    with pytest.raises(ConfigError, match="blessing.baseline.*unknown metric calibration"):
        config_from_dict({"blessing": {"baseline": {"calibration": {"tolerance": 0.1}}}})
    with pytest.raises(ConfigError, match="metrics.thresholds"):
        config_from_dict({"metrics": {"thresholds": {"is_favorited": 1.5}}})
    with pytest.raises(ConfigError, match="metrics.threshold"):
        config_from_dict({"metrics": {"threshold": "median"}})
    with pytest.raises(ConfigError, match="read.batch_size"):
        config_from_dict({"read": {"batch_size": 0}})


def test_config_file_errors_name_the_file(tmp_path) -> None:
    path = tmp_path / "eval.yaml"
    path.write_text("blessing:\n  baseline: {auroc: {tolerance: -1}}\n")
    with pytest.raises(ConfigError, match=rf"{path}: blessing.baseline.auroc.tolerance"):
        load_evaluate_config(path)


def test_overrides_are_validated_like_the_file_and_name_it(tmp_path) -> None:
    path = tmp_path / "eval.yaml"
    path.write_text("read: {batch_size: 64}\n")
    config = load_evaluate_config(path, {"read.max_examples": 300, "blessing.baseline.rce.tolerance": 0.5})
    assert (config.read.batch_size, config.read.max_examples) == (64, 300)
    assert list(config.blessing.baseline) == ["rce"]  # a baseline mapping replaces the default one
    assert config.blessing.baseline["rce"].tolerance == 0.5
    with pytest.raises(ConfigError, match=rf"{path}: blessing.baseline.auroc.tolerance"):
        load_evaluate_config(path, {"blessing.baseline.auroc.tolerance": -1})
    with pytest.raises(ConfigError, match=r"evaluate.yaml: metrics.bins: unknown field"):
        load_evaluate_config(None, {"metrics.bins": 3})


def test_cli_builds_its_config_through_load_evaluate_config(tmp_path, monkeypatch, capsys) -> None:
    import components.evaluate.config as evaluate_config
    from components.cli import main

    calls = []
    real = evaluate_config.load_evaluate_config

    def spy(path=None, overrides=None):
        calls.append((path, overrides))
        return real(path, overrides)

    monkeypatch.setattr(evaluate_config, "load_evaluate_config", spy)
    path = tmp_path / "eval.yaml"
    path.write_text("read: {batch_size: 64}\n")
    base = ["evaluate", "--model", str(tmp_path / "nope"), "--data", str(tmp_path), "--out", str(tmp_path / "out")]
    assert main([*base, "--config-path", str(path), "--set", "read.max_examples=300",
                 "--set", "blessing.baseline.auroc.tolerance=0.02"]) == 2  # no split at --data (checked first)
    assert calls == [(str(path), {"read.max_examples": 300, "blessing.baseline.auroc.tolerance": 0.02})]
    assert "_MANIFEST.json: no manifest" in capsys.readouterr().err

    assert main([*base, "--set", "metrics.bins=3"]) == 2
    assert calls[-1] == (None, {"metrics.bins": 3})
    assert "evaluate.yaml: metrics.bins: unknown field" in capsys.readouterr().err
    assert main([*base, "--set", "read.batch_size"]) == 2
    assert "--set read.batch_size: expected KEY=VALUE" in capsys.readouterr().err
