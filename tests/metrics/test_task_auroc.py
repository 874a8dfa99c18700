"""The trainer's in-training AUROC: per task, close to the exact value, and synced across ranks."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from sklearn.metrics import roc_auc_score

from components.metrics.task_auroc import TaskAUROC

TASKS = ["is_favorited", "is_retweeted", "is_report_tweet_clicked"]


def _data(n: int = 4000, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, 3))
    labels = (rng.random((n, 3)) < 1 / (1 + np.exp(-(z * [1.5, 0.8, 0.0] - [1.0, 2.0, 50.0])))).astype(np.int64)
    probabilities = 1 / (1 + np.exp(-(z + rng.normal(scale=0.5, size=z.shape))))
    return torch.tensor(probabilities, dtype=torch.float32), torch.tensor(labels)


def test_per_task_auroc_is_close_to_exact_and_undefined_without_positives() -> None:
    probabilities, labels = _data()
    metric = TaskAUROC(TASKS)
    for chunk in range(0, len(labels), 500):
        metric.update(probabilities[chunk:chunk + 500], labels[chunk:chunk + 500])
    result = metric.compute()
    for index in (0, 1):
        exact = roc_auc_score(labels[:, index].numpy(), probabilities[:, index].numpy())
        assert result[TASKS[index]] == pytest.approx(exact, abs=2e-3)
    assert labels[:, 2].sum() == 0 and math.isnan(result[TASKS[2]])


def _rank(rank: int, init_file: str, out: dict) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    probabilities, labels = _data()
    metric = TaskAUROC(TASKS)
    metric.update(probabilities[rank::2], labels[rank::2])  # each rank sees half of the rows
    out[rank] = metric.compute()
    dist.destroy_process_group()


@pytest.mark.integration
def test_two_ranks_report_the_auroc_of_all_rows(tmp_path) -> None:
    probabilities, labels = _data()
    single = TaskAUROC(TASKS)
    single.update(probabilities, labels)
    expected = single.compute()
    with mp.Manager() as manager:
        out = manager.dict()
        mp.spawn(_rank, args=(str(tmp_path / "init"), out), nprocs=2, join=True)
        results = dict(out)
    for rank in (0, 1):
        for task in TASKS[:2]:
            assert results[rank][task] == pytest.approx(expected[task], abs=1e-6)
        assert math.isnan(results[rank][TASKS[2]])
