"""Recipe: add a task. A new label and its task in the schema reach every step, nothing else edited."""

from __future__ import annotations

import pytest

from components.common import storage
from components.common.schema import load_schema
from components.convert import ConvertSettings
from components.convert import run as convert
from components.datagen import generate
from components.evaluate import run as evaluate
from components.evaluate.config import EvaluateConfig
from components.train import run as train
from components.train.config import load_train_config
from components.validate import load_validation_config
from components.validate import run as validate
from tests.recipes.recipes import RECIPES, changed_files, copy_of, insert

NEW = "is_quoted"


def add_a_task(configs) -> None:
    """The recipe, as a person would do it: a label feature, then the task that predicts it."""
    schema = configs / "schema" / "local.yaml"
    last_label = "feature: recap.engagement.is_video_playback_50, dtype: int64, raw_type: int8, length: 1}\n"
    insert(schema, last_label, f"  - {{name: {NEW}, role: label, column: {NEW}, feature: recap.engagement.{NEW}, "
                               "dtype: int64, raw_type: int8, length: 1}\n")
    with schema.open("a") as out:
        out.write(f"  - {{label: {NEW}, pos_downsampling_rate: 1.0, neg_downsampling_rate: 1.0}}\n")


@pytest.mark.integration
def test_a_task_added_in_the_schema_is_generated_validated_converted_trained_and_evaluated(tmp_path, monkeypatch):
    copy = copy_of(tmp_path / "repo", "configs")
    add_a_task(copy / "configs")
    assert set(changed_files(copy, "configs")) <= set(RECIPES["Add a task"])
    monkeypatch.setenv("RECAP_CONFIG_DIR", str(copy / "configs"))
    schema = load_schema("local")
    assert schema.task_names[-1] == NEW

    raw, data = str(tmp_path / "raw"), str(tmp_path / "data")
    generated = generate(schema, raw, rows=3_000, files=1, seed=1)
    assert generated.oracle["tasks"][NEW]["positives"] > 0
    validated = validate(raw, schema, str(tmp_path / "validation"), load_validation_config(None))
    assert not validated.has_errors, [a.message for a in validated.errors]
    convert(raw, schema, data, ConvertSettings(shards=1, workers=1))
    config = load_train_config(str(copy / "configs" / "local.yaml"),
                               {"training.num_train_steps": 4, "train_data.global_batch_size": 64,
                                "validation_data.global_batch_size": 64})
    trained = train(f"{data}/train", f"{data}/eval", str(tmp_path / "train"), config)
    result = evaluate(trained.model_dir, f"{data}/eval", str(tmp_path / "evaluation"), EvaluateConfig())
    assert NEW in trained.losses and result.task(NEW).count > 0
    assert NEW in storage.read_json(f"{tmp_path}/evaluation/metrics.json")["tasks"]
