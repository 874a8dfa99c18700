"""Faults on one rank end the same way on every rank: agreed resume step, long exports, data
running out, staging copies removed everywhere. Ranks run as plain processes, so that each
rank's own exit code and message are seen (torchrun would stop the others)."""

from __future__ import annotations

import json
import time

import pytest

from components.common import storage
from components.train import checkpoint
from tests.train.conftest import WORKER, launch_ranks, tiny_config_data, write_config

pytestmark = pytest.mark.integration


def run_ranks(tmp_path, name: str, data: dict, *flags: str, nproc: int = 2, timeout: float = 150):
    config = write_config(tmp_path / f"{name}.yaml", data)
    result = tmp_path / f"{name}.json"
    started = time.monotonic()
    ranks = launch_ranks([str(WORKER), f"--config_path={config}", f"--result={result}", *flags], nproc,
                         timeout=timeout)
    return ranks, result, time.monotonic() - started


def rank_results(result, nproc: int = 2) -> list[dict]:
    return [json.loads(result.read_text())] + [
        json.loads((result.parent / f"{result.name}.rank{r}").read_text()) for r in range(1, nproc)]


def test_slow_export_outlasting_the_process_group_timeout(tmp_path):
    """Rank 1 waits for rank 0's export longer than the training group's timeout, and both succeed."""
    data = tiny_config_data(str(tmp_path / "run"), steps=2, checkpoint_every_n=2, num_eval_steps=0)
    ranks, result, _ = run_ranks(tmp_path, "slow", data, "--pg_timeout_s=10", "--export_delay_s=14")
    for rank, done in enumerate(ranks):
        assert done.returncode == 0, f"rank {rank}:\n{done.stdout[-3000:]}"
    assert [r["step"] for r in rank_results(result)] == [2, 2]
    assert json.loads((tmp_path / "run" / "model" / "export.json").read_text())["step"] == 2


def test_failed_export_fails_every_rank(tmp_path):
    data = tiny_config_data(str(tmp_path / "run"), steps=2, checkpoint_every_n=2, num_eval_steps=0)
    ranks, _, _ = run_ranks(tmp_path, "fail", data, "--export_error=bucket gs://gone is gone")
    assert [done.returncode for done in ranks] == [2, 2], [done.stdout[-2000:] for done in ranks]
    assert "rank 0: error: bucket gs://gone is gone" in ranks[0].stdout
    assert "rank 1: error: rank 0 failed to export the model: bucket gs://gone is gone" in ranks[1].stdout


def test_a_failed_commit_marker_write_on_rank_0_stops_every_rank(tmp_path):
    data = tiny_config_data(str(tmp_path / "run"), steps=2, checkpoint_every_n=2, num_eval_steps=0)
    ranks, _, seconds = run_ranks(tmp_path, "marker", data, "--marker_error=503 Service Unavailable")
    assert [done.returncode for done in ranks] == [2, 2], [done.stdout[-2000:] for done in ranks]
    assert "rank 0: error: 503 Service Unavailable" in ranks[0].stdout
    assert "writing the commit marker: rank 0 failed" in ranks[1].stdout
    assert seconds < 100  # not a process-group timeout (600 s)


def test_data_that_fails_to_open_on_one_rank_stops_every_rank(tmp_path):
    data = tiny_config_data(str(tmp_path / "run"), steps=2, num_eval_steps=0)
    ranks, _, seconds = run_ranks(tmp_path, "open", data, "--open_error_rank=1")
    assert [done.returncode for done in ranks] == [1, 2], [done.stdout[-2000:] for done in ranks]
    assert "rank 1: error: gs://bucket/data/train/_MANIFEST.json: 403 Forbidden" in ranks[1].stdout
    assert "rank 0: error: train_data: opening the data: rank 1 failed" in ranks[0].stdout
    assert seconds < 100


def test_a_rank_out_of_data_stops_every_rank_with_the_same_error(tmp_path):
    data = tiny_config_data(str(tmp_path / "run"), steps=8, checkpoint_every_n=100, num_eval_steps=0,
                            gradient_accumulation=2)
    ranks, _, seconds = run_ranks(tmp_path, "short", data, "--short_rank=1", "--short_batches=5")
    message = ("error: train_data: ran out of batches (rank 1 after 5 per-rank batches); "
               "set repeat: true or lower training.num_train_steps")
    for rank, done in enumerate(ranks):
        assert done.returncode == 1, f"rank {rank}:\n{done.stdout[-3000:]}"
        assert f"rank {rank}: {message}" in done.stdout
    assert seconds < 100  # not a process-group timeout (600 s)


def test_gcs_resume_is_agreed_and_leaves_no_staging_copy_on_any_rank(tmp_path, gcs_bucket):
    """Rank 1's listing lags a step behind; rank 0's choice holds. Every rank's staging area
    (one per rank here, as on separate nodes) is empty after saves, prunes and a resume, and
    each rank downloaded the resumed checkpoint once."""
    save_dir = storage.join(gcs_bucket, "run")
    spool = tmp_path / "spool"
    common = {"checkpoint_every_n": 5, "checkpoint_max_to_keep": 2, "num_eval_steps": 0}
    first, result, _ = run_ranks(tmp_path, "first", tiny_config_data(save_dir, steps=10, **common),
                                 f"--spool_per_rank={spool}")
    assert [done.returncode for done in first] == [0, 0], [done.stdout[-3000:] for done in first]
    assert checkpoint.committed_steps(save_dir) == [5, 10]
    second, result, _ = run_ranks(tmp_path, "second", tiny_config_data(save_dir, steps=15, **common),
                                  f"--spool_per_rank={spool}", "--stale_listing", "--pg_timeout_s=60",
                                  "--count_downloads")
    assert [done.returncode for done in second] == [0, 0], [done.stdout[-3000:] for done in second]
    results = rank_results(result)
    assert [(r["resumed_from"], r["step"]) for r in results] == [(10, 15), (10, 15)]
    # A staging directory per rank (separate nodes): each rank fetches the whole checkpoint once.
    # (tests/train/test_checkpoint_download.py: ranks sharing one fetch it once between them.)
    resumed = checkpoint.step_dir(save_dir, 10)
    whole = sum(storage.size(uri) for uri in storage.list_uris(resumed))
    assert [sum(n for uri, n in r["downloaded"].items() if uri.startswith(resumed + "/")) for r in results] \
        == [whole, whole]
    assert checkpoint.committed_steps(save_dir) == [10, 15]
    for rank in range(2):
        assert list((spool / f"rank{rank}" / "recap-checkpoints").iterdir()) == []
