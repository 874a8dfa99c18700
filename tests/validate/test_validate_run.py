"""`recap validate` end to end: clean data passes, outputs are complete, exit codes, config, drift."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from components.cli import main as recap
from components.common.errors import ConfigError
from components.datagen import generate, read_oracle
from components.validate import ValidationConfig, load_validation_config, run

BUNDLED = load_validation_config(None)  # configs/validation.yaml


@pytest.fixture(scope="module")
def clean_result(clean_data, local_schema, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("val") / "out")
    return run(clean_data, local_schema, out, BUNDLED), out


def test_clean_generated_data_passes_without_any_anomaly(clean_result) -> None:
    result, _ = clean_result
    assert result.anomalies == () and not result.has_errors
    assert result.rows == 3_000 and result.files == 2


def test_statistics_describe_every_column(clean_result, clean_data, local_schema) -> None:
    result, _ = clean_result
    stats = json.loads(Path(result.statistics_uri).read_text())
    assert stats["schema_hash"] == local_schema.hash and stats["rows"] == 3_000
    assert set(stats["columns"]) == {f.column for f in local_schema.features}
    continuous = stats["columns"]["continuous"]
    assert continuous["summary"]["nan"] + continuous["summary"]["inf"] > 0  # the generator's NaN/inf
    assert 0.2 < continuous["summary"]["zero_share"] < 0.7
    assert len(continuous["elements"]["mean"]) == 64 and len(continuous["histograms"]["bins"]) == 64
    assert set(continuous["summary"]["quantiles"]) == {"p01", "p25", "p50", "p75", "p99"}
    table = pq.read_table(f"{clean_data}/part-00000-of-00002.parquet")
    first = table.column("continuous").combine_chunks().flatten().to_numpy().reshape(-1, 64)[:, 0]
    assert continuous["elements"]["max"][0] >= np.nanmax(np.where(np.isfinite(first), first, np.nan))
    # label rates agree with the generator's own count
    oracle = read_oracle(clean_data)
    for task, truth in oracle["tasks"].items():
        assert stats["columns"][task]["summary"]["positives"] == truth["positives"]
    user = stats["columns"]["user_id"]["summary"]
    ids = [pq.read_table(f"{clean_data}/part-0000{i}-of-00002.parquet", columns=["user_id"]) for i in range(2)]
    exact = len(np.unique(np.concatenate([t.column("user_id").to_numpy() for t in ids])))
    assert user["approx_distinct"] == pytest.approx(exact, rel=0.05)
    assert 0 < user["top_ids_share"] < 1


def test_report_is_self_contained_html_with_plots(clean_result) -> None:
    result, _ = clean_result
    report = Path(result.report_uri).read_text()
    assert report.startswith("<!DOCTYPE html>") and "PASSED" in report
    assert report.count("<svg") >= 5
    assert "<script" not in report and not re.search(r"(src|href)=\"?(https?:)?//", report)
    metrics = json.loads(Path(result.metrics_uri).read_text())
    assert metrics["passed"] == 1 and metrics["rows"] == 3_000
    assert all(isinstance(v, int | float) for v in metrics.values())


def test_cli_exit_codes_and_the_failure_names_codes_and_columns(clean_data, tmp_path, capsys) -> None:
    assert recap(["validate", "--input", clean_data, "--schema", "local", "--out", str(tmp_path / "ok")]) == 0
    broken = tmp_path / "broken"
    shutil.copytree(clean_data, broken)
    path = broken / "part-00001-of-00002.parquet"
    table = pq.read_table(path)
    labels = table.column("is_favorited").to_numpy().copy()
    labels[3] = 2
    table = table.set_column(table.schema.get_field_index("is_favorited"), "is_favorited", pa.array(labels))
    pq.write_table(table.drop_columns(["discrete"]), path)
    capsys.readouterr()
    out = tmp_path / "bad"
    assert recap(["validate", "--input", str(broken), "--schema", "local", "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "label_not_binary(is_favorited)" in err and "missing_column(discrete)" in err
    assert {p.name for p in out.iterdir()} == {"statistics.json", "anomalies.json", "report.html", "metrics.json"}
    assert "FAILED" in (out / "report.html").read_text()


def test_missing_input_and_bad_config_are_usage_errors(tmp_path, clean_data) -> None:
    assert recap(["validate", "--input", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]) == 2
    assert recap(["validate", "--out", str(tmp_path / "o")]) == 2
    config = tmp_path / "bad.yaml"
    config.write_text("max_non_finite_share: 0.1\nmax_nan_share: 0.2\n")
    assert recap(["validate", "--input", clean_data, "--out", str(tmp_path / "o"), f"--config_path={config}"]) == 2


def test_config_defaults_file_and_validation(tmp_path) -> None:
    bundled = load_validation_config()
    assert bundled.rate_bounds("is_favorited").min == 0.005
    assert bundled.rate_bounds("is_replied") == bundled.positive_rate
    assert ValidationConfig().drift.numeric_js_max == bundled.drift.numeric_js_max
    path = tmp_path / "c.yaml"
    path.write_text("severity: {not_a_code: error}\n")
    with pytest.raises(ConfigError, match="severity"):
        load_validation_config(str(path))
    path.write_text("positive_rate: {min: 0.5, max: 0.1}\n")
    with pytest.raises(ConfigError, match="positive_rate"):
        load_validation_config(str(path))


@pytest.fixture(scope="module")
def drift_runs(tmp_path_factory, local_schema):
    """Reference stats from seed 1; candidates from another seed, unshifted and shifted."""
    root = tmp_path_factory.mktemp("drift")
    for name, seed, shift in (("reference", 1, 0.0), ("same", 2, 0.0), ("shifted", 2, 1.0)):
        generate(local_schema, str(root / name), rows=6_000, files=1, seed=seed, shift=shift)
    reference = run(str(root / "reference"), local_schema, str(root / "reference-val"), BUNDLED)
    assert not reference.has_errors
    return root, reference.statistics_uri


def test_no_drift_when_only_the_seed_changes(drift_runs, local_schema) -> None:
    root, reference = drift_runs
    result = run(str(root / "same"), local_schema, str(root / "same-val"), BUNDLED, reference_stats_uri=reference)
    assert result.anomalies == ()
    drift = json.loads(Path(result.statistics_uri).read_text())["drift"]["columns"]
    assert drift["continuous"]["measure"] == "js" and drift["binary"]["measure"] == "linf"
    assert 0 < drift["continuous"]["max"] < 0.5 * drift["continuous"]["threshold"]


def test_drift_flagged_when_the_generator_is_shifted(drift_runs, local_schema) -> None:
    root, reference = drift_runs
    result = run(str(root / "shifted"), local_schema, str(root / "shifted-val"), BUNDLED, reference_stats_uri=reference)
    flagged = {(a.code, a.column) for a in result.anomalies}
    assert {("drift_numeric", "continuous"), ("drift_numeric", "twhin_user_follow"),
            ("drift_categorical", "binary"), ("drift_categorical", "discrete")} <= flagged
    assert result.has_errors and result.metrics["max_drift_numeric"] > 0.05
    numeric = next(a for a in result.anomalies if a.code == "drift_numeric" and a.column == "continuous")
    assert numeric.details["elements"] and max(numeric.details["distances"]) > 0.05
    assert "drift vs reference" in Path(result.report_uri).read_text()


def test_reference_from_another_schema_is_reported(drift_runs, local_schema, tmp_path) -> None:
    root, reference = drift_runs
    other = json.loads(Path(reference).read_text())
    other["schema_hash"] = "0" * 16
    other["columns"]["continuous"]["length"] = 6000
    path = tmp_path / "other.json"
    path.write_text(json.dumps(other))
    result = run(str(root / "same"), local_schema, str(tmp_path / "out"), BUNDLED, reference_stats_uri=str(path))
    (mismatch,) = [a for a in result.anomalies if a.code == "reference_mismatch"]
    assert mismatch.details["skipped_columns"] == ["continuous"] and not result.has_errors


def test_list_codes_prints_every_code_with_its_severity(capsys) -> None:
    from components.validate.anomalies import CODES

    assert recap(["validate", "--list-codes"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[:2] for line in lines] == [[code, severity] for code, (severity, _) in CODES.items()]
