"""End to end: generated data -> convert -> torchrun trainer -> exported model -> `run` / `recap evaluate`."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from components.common import storage
from components.common.errors import StorageError
from components.common.schema import load_schema
from components.evaluate import run
from components.evaluate.config import EvaluateConfig

REPO_ROOT = Path(__file__).resolve().parents[2]
RECAP = str(Path(sys.executable).parent / "recap")
ROWS = 40_000

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict[str, str]:
    """A model trained by the real trainer (torchrun, 1 CPU process) on generated data."""
    from components.convert.convert import ConvertSettings
    from components.convert.convert import run as convert
    from components.datagen.generate import generate
    from components.trainer_command.torchrun import torchrun_command

    root = tmp_path_factory.mktemp("e2e")
    schema = load_schema("local")
    generate(schema, str(root / "raw"), rows=ROWS, files=2, seed=1)
    convert(str(root / "raw"), schema, str(root / "data"),
            ConvertSettings(shards=2, workers=1, eval_fraction=0.25))
    command = torchrun_command(str(REPO_ROOT / "configs" / "local.yaml"), overrides={
        "train_data": str(root / "data" / "train"), "validation_data": str(root / "data" / "eval"),
        "save_dir": str(root / "train"), "num_train_steps": 300})
    done = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return {"root": str(root), "raw": str(root / "raw"), "eval": str(root / "data" / "eval"),
            "model": str(root / "train" / "model")}


@pytest.fixture(scope="module")
def evaluated(trained) -> tuple[object, str]:
    out = storage.join(trained["root"], "eval")
    return run(trained["model"], trained["eval"], out, EvaluateConfig()), out


def hanley_mcneil_se(auroc: float, positives: int, negatives: int) -> float:
    """Standard error of an AUROC estimate (Hanley & McNeil, 1982)."""
    q1, q2 = auroc / (2 - auroc), 2 * auroc**2 / (1 + auroc)
    variance = (auroc * (1 - auroc) + (positives - 1) * (q1 - auroc**2)
                + (negatives - 1) * (q2 - auroc**2)) / (positives * negatives)
    return math.sqrt(max(variance, 0.0))


def test_auroc_per_task_is_consistent_with_the_generator_oracle(trained, evaluated) -> None:
    from components.datagen.oracle import read_oracle

    result, out = evaluated
    oracle = read_oracle(trained["raw"])["tasks"]
    report = storage.read_json(storage.join(out, "metrics.json"))["tasks"]
    assert set(report) == set(oracle)
    for task, values in report.items():
        if values["auroc"] is None:  # a rare task with no positive in this eval split
            assert values["positives"] == 0 or values["positives"] == values["count"]
            continue
        ceiling = oracle[task]["auroc"]
        se = hanley_mcneil_se(ceiling, values["positives"], values["count"] - values["positives"])
        # No model beats the true probabilities beyond sampling noise...
        assert values["auroc"] <= ceiling + 3 * se + 0.01, (task, values["auroc"], ceiling)
        # ...and the report's AUROC is the one the run returned.
        assert values["auroc"] == pytest.approx(result.task(task).auroc)
    # The trained model learned the planted signal of the most common engagement.
    fav = report["is_favorited"]
    assert fav["auroc"] > 0.6 and fav["auroc"] <= oracle["is_favorited"]["auroc"] + 0.02
    assert result.examples == storage.read_json(storage.join(trained["eval"], "_MANIFEST.json"))["total_records"]
    assert result.examples_per_s > 0
    blessing = storage.read_json(storage.join(out, "blessing.json"))
    any_nan = any(v[m] is None for v in report.values()
                  for m in ("auroc", "average_precision", "log_loss", "rce", "nrce", "calibration"))
    assert blessing["blessed"] is (not any_nan) is result.blessed
    assert 0.0 <= result.ranking.gauc <= 1.0 and result.ranking.users > 0


def recap_evaluate(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([RECAP, "evaluate", *args], capture_output=True, text=True, timeout=300, cwd=REPO_ROOT)


def test_cli_blesses_against_itself_and_refuses_a_clearly_better_baseline(trained, evaluated, tmp_path) -> None:
    _, first = evaluated
    baseline = storage.read_json(storage.join(first, "metrics.json"))
    for values in baseline["tasks"].values():
        if values["auroc"] is not None:
            values["auroc"] = min(1.0, values["auroc"] + 0.05)
    better = tmp_path / "better_metrics.json"
    better.write_text(json.dumps(baseline))
    config = tmp_path / "eval.yaml"
    config.write_text("read: {max_examples: 3000}\nblessing: {baseline: {auroc: {tolerance: 0.01}}}\n")

    refused = recap_evaluate("--model", trained["model"], "--data", trained["eval"], "--out", str(tmp_path / "a"),
                             "--baseline", str(better), "--config_path", str(config))
    assert refused.returncode == 0, refused.stderr[-2000:]  # the pipeline branches on blessing.json
    assert "NOT BLESSED" in refused.stdout
    verdict = json.loads((tmp_path / "a" / "blessing.json").read_text())
    assert verdict["blessed"] is False and "is_favorited" in verdict["reason"]
    assert "below baseline" in " ".join(verdict["tasks"]["is_favorited"]["reasons"])
    assert json.loads((tmp_path / "a" / "metrics.json").read_text())["examples"] == 3000
    assert "rows_per_s" in refused.stderr or "examples_per_s" in refused.stderr

    # A run that is its own baseline is within any tolerance (if no metric is NaN).
    same = recap_evaluate("--model", trained["model"], "--data", trained["eval"], "--out", str(tmp_path / "b"),
                          "--baseline", str(tmp_path / "a"), "--config_path", str(config))
    assert same.returncode == 0
    second = json.loads((tmp_path / "b" / "blessing.json").read_text())
    assert all("below baseline" not in " ".join(v["reasons"]) for v in second["tasks"].values())


def test_cli_missing_model_is_a_usage_error_naming_it(trained, tmp_path) -> None:
    missing = recap_evaluate("--model", str(tmp_path / "nope"), "--data", trained["eval"], "--out", str(tmp_path / "o"))
    assert missing.returncode == 2
    assert "nope" in missing.stderr and "Traceback" not in missing.stderr
    with pytest.raises(StorageError):
        run(str(tmp_path / "nope"), trained["eval"], str(tmp_path / "o"), EvaluateConfig())


def test_run_reads_and_writes_gcs_with_the_same_results(trained, evaluated, gcs_bucket) -> None:
    local_result, _ = evaluated
    model = f"{gcs_bucket}/models/m1"
    data = f"{gcs_bucket}/data/eval"
    storage.copy_prefix(trained["model"], model)
    storage.copy_prefix(trained["eval"], data)
    result = run(model, data, f"{gcs_bucket}/eval/m1", EvaluateConfig())
    for task in result.tasks:
        expected = local_result.task(task.task)
        assert task.count == expected.count
        assert (math.isnan(task.auroc) and math.isnan(expected.auroc)) or task.auroc == pytest.approx(expected.auroc, abs=1e-6)
    assert storage.exists(f"{gcs_bucket}/eval/m1/_MANIFEST.json")
    assert "<svg" in storage.read_text(f"{gcs_bucket}/eval/m1/report.html")
