"""`recap pipeline submit` against a loopback KFP API, and parameter parsing."""

from __future__ import annotations

import pytest

from components.cli import main
from components.common.errors import ConfigError
from pipeline.cli import _parameter_types, parse_params, run_url
from tests.pipeline.fake_kfp import FakeKfp


def test_params_are_typed_from_the_pipeline_signature():
    types = _parameter_types()
    parsed = parse_params(["num_workers=4", "blessing_tolerance=0.01", "raw_data_uri=gs://b/raw", "train_image=r/recap-train:1.2"],
                          types)
    assert parsed == {"num_workers": 4, "blessing_tolerance": 0.01, "raw_data_uri": "gs://b/raw", "train_image": "r/recap-train:1.2"}
    with pytest.raises(ConfigError, match="not a pipeline parameter"):
        parse_params(["num_wrokers=4"], types)
    with pytest.raises(ConfigError, match="expected int"):
        parse_params(["num_workers=four"], types)
    with pytest.raises(ConfigError, match="NAME=VALUE"):
        parse_params(["num_workers"], types)


def test_run_url_points_at_the_run_page():
    assert run_url("https://kfp.example.com/pipeline/", "abc") == "https://kfp.example.com/pipeline/#/runs/details/abc"


@pytest.mark.integration
def test_submit_creates_experiment_and_run_and_prints_its_url(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))  # kfp.Client reads ~/.config/kfp/context.json
    with FakeKfp() as kfp:
        code = main(["pipeline", "submit", "--host", kfp.url, "--experiment", "recap-ci",
                     "--param", "raw_data_uri=gs://bucket/raw", "--param", "num_workers=2",
                     "--no-cache", "--service-account", "recap-launcher", "--tag", "3.1.4"])
        assert code == 0
        assert capsys.readouterr().out.strip() == f"{kfp.url}/#/runs/details/run-1"
        assert list(kfp.experiments) == ["recap-ci"]
        run = kfp.runs[0]
        assert run["experiment_id"] == "exp-1" and run["service_account"] == "recap-launcher"
        assert run["runtime_config"]["parameters"] == {"raw_data_uri": "gs://bucket/raw", "num_workers": 2}
        spec = run["pipeline_spec"]
        defaults = spec["root"]["inputDefinitions"]["parameters"]
        assert defaults["train_image"]["defaultValue"].endswith("/recap-train:3.1.4")
        caching = [t.get("cachingOptions", {}) for c in spec["components"].values()
                   for t in c.get("dag", {}).get("tasks", {}).values()]
        assert caching and not any(o.get("enableCache") for o in caching)  # --no-cache reached every task
