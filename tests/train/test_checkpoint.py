"""Checkpoint bookkeeping: only committed step dirs count; pruning; initial checkpoint lookup."""

from __future__ import annotations

import pytest
import torch

from components.common import storage
from components.common.errors import StorageError
from components.train import checkpoint
from components.train.distributed import init_distributed, shutdown_distributed


def fake_step(save_dir: str, step: int, committed: bool) -> str:
    directory = checkpoint.step_dir(save_dir, step)
    storage.write_bytes(storage.join(directory, "__0_0.distcp"), b"half-written shard")
    if committed:
        storage.write_json(storage.join(directory, checkpoint.COMMIT_MARKER), {"step": step})
    return directory


@pytest.fixture(params=["local", "gcs"])
def save_dir(request, tmp_path):
    if request.param == "local":
        return str(tmp_path / "run")
    return storage.join(request.getfixturevalue("gcs_bucket"), "run")


def test_a_step_dir_without_marker_is_never_picked(save_dir):
    fake_step(save_dir, 10, committed=True)
    fake_step(save_dir, 20, committed=True)
    partial = fake_step(save_dir, 30, committed=False)  # interrupted mid-write
    assert checkpoint.committed_steps(save_dir) == [10, 20]
    assert checkpoint.latest_checkpoint(save_dir) == (20, checkpoint.step_dir(save_dir, 20))
    with pytest.raises(StorageError, match="not a committed checkpoint"):
        checkpoint.load(partial, {})


def test_empty_or_missing_save_dir_has_no_checkpoint(save_dir):
    assert checkpoint.latest_checkpoint(save_dir) is None
    with pytest.raises(StorageError, match="no committed checkpoint"):
        checkpoint.resolve_initial_checkpoint(save_dir)


def test_prune_keeps_the_newest(save_dir):
    for step in (5, 10, 15, 20):
        fake_step(save_dir, step, committed=True)
    assert checkpoint.prune(save_dir, keep=2) == [5, 10]
    assert checkpoint.committed_steps(save_dir) == [15, 20]
    assert not storage.exists(storage.join(checkpoint.step_dir(save_dir, 5), "__0_0.distcp"))


def test_initial_checkpoint_is_a_step_dir_or_the_newest_below_a_save_dir(save_dir):
    fake_step(save_dir, 3, committed=True)
    fake_step(save_dir, 7, committed=True)
    fake_step(save_dir, 9, committed=False)
    assert checkpoint.resolve_initial_checkpoint(save_dir) == checkpoint.step_dir(save_dir, 7)
    step3 = checkpoint.step_dir(save_dir, 3)
    assert checkpoint.resolve_initial_checkpoint(step3 + "/") == step3


@pytest.fixture
def world_of_one():
    yield init_distributed()
    shutdown_distributed()


def test_gcs_checkpoints_leave_no_local_staging_copy(gcs_bucket, tmp_path, monkeypatch, world_of_one):
    """Staged shards go once uploaded, downloaded copies once loaded: a long run cannot fill the disk."""
    monkeypatch.setenv("RECAP_SPOOL_DIR", str(tmp_path / "spool"))
    staging = tmp_path / "spool" / "recap-checkpoints"
    save_dir = storage.join(gcs_bucket, "run")
    state = {"weights": torch.arange(6.0)}
    for step in (1, 2, 3):
        target = checkpoint.save(save_dir, step, state, rank=0)
        assert list(staging.iterdir()) == []
        names = {storage.basename(uri) for uri in storage.list_uris(target)}
        assert names == {".metadata", "__0_0.distcp", checkpoint.COMMIT_MARKER}
    assert checkpoint.prune(save_dir, keep=1) == [1, 2]
    for no_dist in (False, True):  # resume (every rank), export (rank 0 alone)
        loaded = {"weights": torch.zeros(6)}
        checkpoint.load(checkpoint.step_dir(save_dir, 3), loaded, no_dist=no_dist)
        assert torch.equal(loaded["weights"], state["weights"])
        assert list(staging.iterdir()) == []
