"""TorchRec's TrainPipelineSparseDist (`training.train_pipeline`) trains exactly as the plain loop.

On the CPU the pipeline has no streams to overlap on, so its per-step losses must equal the plain
loop's bit for bit; a mismatch means it fed a batch twice, skipped one, or ran the sharded tables
on another batch's input exchange. World size 2 runs under torchrun (the embedding input exchange
is then a real all-to-all).
"""

from __future__ import annotations

import json

import pytest

from components.common.errors import ConfigError
from components.train.config import load_train_config
from components.train.distributed import init_distributed, shutdown_distributed
from components.train.loop import train
from components.train.synthetic import synthetic_source
from tests.train.conftest import WORKER, tiny_config_data, torchrun, write_config

EVAL_OFFSET = 10**6


@pytest.fixture
def env():
    yield init_distributed()
    shutdown_distributed()


def run(tmp_path, env, save_dir, pipeline: bool, **training):
    data = tiny_config_data(save_dir, train_log_every_n=1, train_pipeline=pipeline, **training)
    config = load_train_config(write_config(tmp_path / f"{pipeline}.yaml", data))
    schema = config.load_schema()
    size = config.train_data.global_batch_size
    return train(config, schema, env, synthetic_source(schema, size), synthetic_source(schema, size, offset=EVAL_OFFSET))


def test_pipeline_losses_equal_the_plain_loop_at_every_step(tmp_path, env, caplog):
    caplog.set_level("INFO")
    plain = run(tmp_path, env, str(tmp_path / "plain"), False, steps=12, eval_every_n=5)
    piped = run(tmp_path, env, str(tmp_path / "piped"), True, steps=12, eval_every_n=5)
    assert "TrainPipelineSparseDist" in caplog.text
    assert [s for s, _ in piped.history] == list(range(1, 13))
    assert piped.history == plain.history  # the evaluations at steps 5 and 10 detach and re-attach the pipeline
    assert piped.eval_losses == plain.eval_losses and piped.losses == plain.losses


def test_pipeline_resumes_at_the_checkpointed_step(tmp_path, env):
    straight = run(tmp_path, env, str(tmp_path / "straight"), True, steps=20)
    first = run(tmp_path, env, str(tmp_path / "resumed"), True, steps=10)
    resumed = run(tmp_path, env, str(tmp_path / "resumed"), True, steps=20)
    assert first.step == 10 and resumed.resumed_from == 10 and resumed.step == 20
    assert [s for s, _ in resumed.history] == list(range(11, 21))
    assert resumed.history == straight.history[10:]


def test_pipeline_with_gradient_accumulation_is_refused(tmp_path, env):
    with pytest.raises(ConfigError, match="train_pipeline: true needs training.gradient_accumulation: 1"):
        run(tmp_path, env, str(tmp_path / "acc"), True, steps=2, gradient_accumulation=2)


@pytest.mark.integration
def test_pipeline_losses_equal_the_plain_loop_on_two_ranks(tmp_path):
    worker = WORKER.parent / "pipeline_worker.py"
    data = tiny_config_data(str(tmp_path / "unused"), steps=8, train_log_every_n=1, eval_every_n=4,
                            checkpoint_every_n=100)
    config = write_config(tmp_path / "c.yaml", data)
    result = tmp_path / "result.json"
    done = torchrun([str(worker), config, str(result)], nproc=2)
    assert done.returncode == 0, done.stderr[-3000:]
    runs = json.loads(result.read_text())
    assert [s for s, _ in runs["pipeline"]["history"]] == list(range(1, 9))
    assert runs["pipeline"] == runs["plain"]
