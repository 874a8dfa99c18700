"""Start-up checks before a job starts: batch sizes against ranks, shards against ranks.

The README's GPU submission (prod config, default conversion) must pass them for one GPU up to
4 nodes x 8 GPUs; the combinations that used to fail on every rank at start fail here, in one line.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from components.cli import main
from components.common.errors import ConfigError
from components.convert import ConvertSettings
from components.launch import check_shape
from components.launch.spec import LaunchSpec
from components.trainer_command.flags import TrainerArgs
from components.trainer_command.launch_shape import check_launch_shape
from pipeline import runtime

REPO = Path(__file__).resolve().parents[2]
PROD = "configs/prod.yaml"
ARGS = TrainerArgs.of(PROD, train_data="gs://b/tf/train", validation_data="gs://b/tf/eval",
                      save_dir="gs://b/ckpt", model_dir="gs://b/model")
SHAPES = [(1, 1), (1, 8), (3, 8), (4, 8)]  # nodes x GPUs per node


def pipeline_shards(num_workers: int, gpus_per_worker: int) -> dict[str, int]:
    """What the pipeline's convert step writes per split for this job with the default settings."""
    settings = runtime.shards_for_ranks(ConvertSettings(), runtime.ranks(num_workers, 0, gpus_per_worker))
    return {"train_data": settings.shards, "validation_data": settings.shards}


def test_the_readme_submission_is_one_of_the_shapes_checked():
    text = (REPO / "README.md").read_text()
    shape = re.search(r"num_workers=(\d+) .*gpus_per_worker=(\d+)", text)
    assert shape and (int(shape.group(1)), int(shape.group(2))) in SHAPES


@pytest.mark.parametrize(("nodes", "gpus"), SHAPES)
def test_the_gpu_submission_passes_the_start_up_checks(nodes, gpus, monkeypatch):
    monkeypatch.chdir(REPO)
    spec = LaunchSpec(job_name="recap-train-x", image="r/recap-train:1", num_workers=nodes, gpus_per_worker=gpus)
    assert spec.procs_per_worker == gpus
    shards = pipeline_shards(nodes, gpus)
    assert shards["train_data"] >= nodes * gpus
    check_shape(spec, ARGS, "kubernetes", shards)  # raises on failure


def test_a_global_batch_that_does_not_divide_fails_in_one_line(tmp_path):
    data = yaml.safe_load((REPO / PROD).read_text())
    for section in ("train_data", "validation_data"):
        data[section].pop("per_rank_batch_size")
        data[section]["global_batch_size"] = 128
    config = tmp_path / "global128.yaml"
    config.write_text(yaml.safe_dump(data))
    check_launch_shape(str(config), {}, 4, 8)  # 128 / 32 ranks
    with pytest.raises(ConfigError) as failure:
        check_launch_shape(str(config), {}, 3, 8)
    message = str(failure.value)
    assert "\n" not in message
    assert "train_data.global_batch_size 128 is not divisible by 24" in message
    assert "3 node(s) x 8 process(es)" in message and "per_rank_batch_size" in message
    with pytest.raises(ConfigError, match="train_data.global_batch_size 100 is not divisible by 32"):
        check_launch_shape(str(config), {"global_batch_size": "100"}, 4, 8)


def test_fewer_shards_than_ranks_fails_before_launch(monkeypatch):
    monkeypatch.chdir(REPO)
    with pytest.raises(ConfigError, match=r"the train_data split has 4 shard\(s\).*shards >= 32"):
        check_launch_shape(PROD, {}, 4, 8, {"train_data": 4, "validation_data": 4})
    check_launch_shape(PROD, {}, 1, 4, {"train_data": 4, "validation_data": 4})


def test_explicit_convert_shards_are_kept_and_checked():
    settings = runtime.shards_for_ranks(ConvertSettings(shards=4), 32)
    assert settings.shards == 4  # the user's choice; the launch check then names it
    assert runtime.shards_for_ranks(ConvertSettings(), 1).shards == ConvertSettings().shards


def test_recap_launch_refuses_a_shape_that_cannot_start(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    data = yaml.safe_load((REPO / PROD).read_text())
    data["train_data"] = {k: v for k, v in data["train_data"].items() if k != "per_rank_batch_size"}
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(data))
    trainer = ["--config-path", str(config), "--train-data", "gs://b/tf/train", "--validation-data", "gs://b/tf/eval",
               "--save-dir", "gs://b/ckpt", "--model-dir", "gs://b/model"]
    code = main(["launch", "--dry-run", "--backend", "kubernetes", "--run-id", "r", "--image", "r/t:1",
                 "--num-workers", "3", "--gpus-per-worker", "8", *trainer])
    assert code == 2
    assert "train_data.global_batch_size 128 is not divisible by 24" in capsys.readouterr().err
