"""Per-task AUROC for the trainer's periodic evaluation: a torchmetrics MetricCollection.

One binned `BinaryAUROC` per task (a fixed confusion-matrix state per threshold), so the
state is small and `compute()` sums it over ranks (torchmetrics syncs through the process
group the trainer already runs on: gloo on CPU, nccl on GPUs). Every rank must call
`compute()`, as for any collective. The final evaluation step uses the exact streaming core
(components.metrics.binary); this is the cheap in-training signal beside the losses.
"""

from __future__ import annotations

import math

import torch
from torchmetrics import MetricCollection
from torchmetrics.classification import BinaryAUROC

THRESHOLDS = 1000


class TaskAUROC:
    """AUROC per task over [batch, tasks] probabilities and labels, synced across ranks."""

    def __init__(self, tasks: list[str], device: torch.device | str = "cpu", thresholds: int = THRESHOLDS) -> None:
        self.tasks = list(tasks)
        self.collection = MetricCollection({task: BinaryAUROC(thresholds=thresholds) for task in self.tasks},
                                            compute_groups=False).to(device)
        self.positives = torch.zeros(len(self.tasks), device=device)
        self.count = 0

    def update(self, probabilities: torch.Tensor, labels: torch.Tensor) -> None:
        labels = labels.to(torch.long)
        for index, task in enumerate(self.tasks):
            self.collection[task].update(probabilities[:, index].float(), labels[:, index])
        self.positives += labels.sum(0).to(self.positives.dtype)
        self.count += labels.shape[0]

    def compute(self) -> dict[str, float]:
        """Task -> AUROC; NaN for a task with no positives or no negatives in the data seen (all ranks)."""
        values = self.collection.compute()
        positives, count = self.positives.clone(), torch.tensor([float(self.count)], device=self.positives.device)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(positives)
            torch.distributed.all_reduce(count)
        out = {}
        for index, task in enumerate(self.tasks):
            both = 0 < float(positives[index]) < float(count[0])
            out[task] = float(values[task]) if both else math.nan
        return out
