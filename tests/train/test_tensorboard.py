"""TensorBoard scalars of a gs:// run: uploaded at every checkpoint, not only at the end."""

from __future__ import annotations

import pytest

from components.common import storage
from components.train.config import load_train_config
from components.train.distributed import DistEnv
from components.train.tensorboard import TensorBoard
from tests.train.conftest import tiny_config_data, write_config

pytestmark = pytest.mark.integration
CHIEF = DistEnv(rank=0, world_size=1, local_rank=0, local_world_size=1, device=None, backend="gloo")


def test_gcs_event_files_follow_the_run_and_leave_no_staging(tmp_path, gcs_bucket, monkeypatch):
    monkeypatch.setenv("RECAP_SPOOL_DIR", str(tmp_path / "spool"))
    save_dir = storage.join(gcs_bucket, "run")
    data = tiny_config_data(save_dir, tensorboard=True)
    board = TensorBoard(load_train_config(write_config(tmp_path / "c.yaml", data)), CHIEF)
    board.scalars("train_loss", {"mean": 0.7}, 1)
    board.sync()  # what the loop does after each checkpoint
    [event_file] = storage.list_uris(storage.join(save_dir, "tensorboard"))
    first = storage.size(event_file)
    board.scalars("train_loss", {"mean": 0.6}, 2)
    board.sync()
    assert storage.size(event_file) > first  # the grown file replaced the old upload
    board.close()
    assert storage.list_uris(storage.join(save_dir, "tensorboard")) == [event_file]
    assert not board.local.exists()  # the local staging copy is gone
