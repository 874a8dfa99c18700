"""The whole trainer in one process (a world of one): train, checkpoint, resume, export, load."""

from __future__ import annotations

import json

import pytest
import torch

from components.common import storage
from components.common.errors import DataError
from components.exported_model import model_dir as export
from components.exported_model.model_dir import load_exported_model
from components.train import checkpoint
from components.train.config import load_train_config
from components.train.distributed import init_distributed, shutdown_distributed
from components.train.loop import train
from components.train.loss import multi_task_loss
from components.train.synthetic import synthetic_source
from tests.train.conftest import tiny_config_data, write_config

EVAL_OFFSET = 10**6


@pytest.fixture
def env():
    yield init_distributed()
    shutdown_distributed()


def run(tmp_path, env, save_dir, name="c.yaml", **training):
    data = tiny_config_data(save_dir, **training)
    config = load_train_config(write_config(tmp_path / name, data))
    schema = config.load_schema()
    size = config.train_data.global_batch_size
    result = train(config, schema, env, synthetic_source(schema, size),
                   synthetic_source(schema, size, offset=EVAL_OFFSET))
    return config, schema, result


def test_exported_model_reproduces_the_final_evaluation(tmp_path, env):
    config, schema, result = run(tmp_path, env, str(tmp_path / "run"), steps=12, checkpoint_every_n=5,
                                 checkpoint_max_to_keep=2)
    assert result.step == 12 and result.model_dir == str(tmp_path / "run" / "model")
    assert checkpoint.committed_steps(str(tmp_path / "run")) == [10, 12]  # 5 pruned, final step saved
    exported = load_exported_model(result.model_dir)
    assert not exported.model.training and exported.step == 12
    assert type(exported.model.sparse.embedding_bags).__name__ == "EmbeddingBagCollection"
    info = json.loads((tmp_path / "run" / "model" / "export.json").read_text())
    assert info["schema_hash"] == schema.hash and info["tasks"] == list(schema.task_names)
    losses = torch.zeros(len(schema.tasks))
    source = synthetic_source(schema, config.train_data.global_batch_size, offset=EVAL_OFFSET)(0)
    with torch.no_grad():
        for _ in range(config.training.num_eval_steps):
            batch = next(source)
            out = exported.model(batch)
            losses += multi_task_loss(out["logits"], batch.labels, batch.weights, torch.ones(len(schema.tasks)))[1]
    losses /= config.training.num_eval_steps
    assert losses.tolist() == pytest.approx(list(result.eval_losses.values()), rel=1e-5)


def test_loading_weights_exported_by_other_model_code_warns(tmp_path, env, caplog, monkeypatch):
    _, _, result = run(tmp_path, env, str(tmp_path / "run"), steps=2, checkpoint_every_n=2)
    info = json.loads((tmp_path / "run" / "model" / "export.json").read_text())
    assert info["model_code_hash"] == export.model_code_hash()
    with caplog.at_level("WARNING"):
        load_exported_model(result.model_dir)
    assert "other model code" not in caplog.text
    monkeypatch.setattr(export, "model_code_hash", lambda: "0123456789abcdef")
    with caplog.at_level("WARNING"):
        load_exported_model(result.model_dir)
    assert f"exported by other model code (model_code_hash {info['model_code_hash']}, this code 0123456789abcdef" in caplog.text


def test_resume_continues_exactly_where_it_stopped(tmp_path, env):
    straight = run(tmp_path, env, str(tmp_path / "a"), "a.yaml", steps=20, train_log_every_n=5)[2]
    first = run(tmp_path, env, str(tmp_path / "b"), "b1.yaml", steps=10, train_log_every_n=5)[2]
    resumed = run(tmp_path, env, str(tmp_path / "b"), "b2.yaml", steps=20, train_log_every_n=5)[2]
    assert first.step == 10 and resumed.resumed_from == 10 and resumed.step == 20
    assert dict(first.history + resumed.history) == pytest.approx(dict(straight.history), rel=1e-6)


def test_warm_start_loads_weights_but_not_the_step(tmp_path, env):
    _, _, source = run(tmp_path, env, str(tmp_path / "a"), "a.yaml", steps=10)
    data_lr = {"optimizer": {"multi_task_learning_rates": {
        "backbone_learning_rate": {"constant": {"learning_rate": 1e-12}},
        "default_tower_learning_rate": {"constant": {"learning_rate": 1e-12}}},
        "embedding": {"algorithm": "sgd", "learning_rate": 1e-12}}}
    data = tiny_config_data(str(tmp_path / "b"), steps=1, initial_checkpoint_dir=str(tmp_path / "a"))
    data.update(data_lr)
    config = load_train_config(write_config(tmp_path / "b.yaml", data))
    schema = config.load_schema()
    result = train(config, schema, env, synthetic_source(schema, 32))
    assert result.step == 1 and result.resumed_from is None
    before = load_exported_model(source.model_dir).model.state_dict()
    after = load_exported_model(result.model_dir).model.state_dict()
    for name in ("sparse.embedding_bags.embedding_bags.t_meta__user_id.weight", "towers.is_replied.0.weight"):
        assert torch.allclose(before[name], after[name], atol=1e-7), name


@pytest.mark.integration
def test_gcs_save_dir_commits_resumes_and_exports(tmp_path, env, gcs_bucket):
    save_dir = storage.join(gcs_bucket, "heavy-ranker")
    first = run(tmp_path, env, save_dir, "a.yaml", steps=10)[2]
    assert checkpoint.committed_steps(save_dir) == [10]
    second = run(tmp_path, env, save_dir, "b.yaml", steps=15)[2]
    assert second.resumed_from == 10 and second.step == 15
    exported = load_exported_model(storage.join(save_dir, "model"))
    assert exported.step == 15 and first.model_dir.startswith("gs://")


def test_gradient_accumulation_consumes_micro_batches_and_records_the_position(tmp_path, env):
    _, _, result = run(tmp_path, env, str(tmp_path / "run"), steps=6, checkpoint_every_n=3, gradient_accumulation=2)
    marker = json.loads((tmp_path / "run" / "step_6" / checkpoint.COMMIT_MARKER).read_text())
    assert result.step == 6 and marker["batches_consumed"] == 12 and marker["world_size"] == 1


def test_debug_loop_reports_every_step(tmp_path, env, caplog):
    data = tiny_config_data(str(tmp_path / "run"), steps=3, train_log_every_n=100)
    config = load_train_config(write_config(tmp_path / "c.yaml", data))
    schema = config.load_schema()
    with caplog.at_level("INFO", logger="components.train"):
        train(config, schema, env, synthetic_source(schema, 32), debug_loop=True)
    debug_steps = {r.getMessage().split()[1] for r in caplog.records if r.getMessage().startswith("debug step=")}
    assert debug_steps == {"step=0", "step=1", "step=2"}


@pytest.mark.parametrize(("split", "message"), [
    ("train", r"train_data: ran out of batches \(rank 0 after 5 per-rank batches\); set repeat: true "
              r"or lower training\.num_train_steps"),
    ("validation", r"validation_data: ran out of batches \(rank 0 after 1 per-rank batches\); set repeat: "
                   r"true or lower training\.num_eval_steps"),
])
def test_data_running_out_names_the_split_and_the_batch_position(tmp_path, env, split, message):
    data = tiny_config_data(str(tmp_path / "run"), steps=4, gradient_accumulation=2, eval_every_n=1)
    config = load_train_config(write_config(tmp_path / "c.yaml", data))
    schema = config.load_schema()
    limited = {split: 5 if split == "train" else 1}
    train_source = synthetic_source(schema, 32, num_batches=limited.get("train"))
    eval_source = synthetic_source(schema, 32, offset=EVAL_OFFSET, num_batches=limited.get("validation"))
    with pytest.raises(DataError, match=message):
        train(config, schema, env, train_source, eval_source)
