"""Multi-task binary cross entropy with logits: per-task pos_weight, per-example weights."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def multi_task_loss(logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor,
                    pos_weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (loss, per-task losses [T]).

    Each task's loss is the mean over the batch rows of `weight * bce`, divided by the row
    count (not the weight sum) so that per-rank losses average to the global-batch loss, as
    data-parallel gradient averaging assumes. The total is the mean over tasks.
    """
    per_example = F.binary_cross_entropy_with_logits(
        logits.float(), labels.float(), weight=weights.float(), pos_weight=pos_weight, reduction="none"
    )
    per_task = per_example.mean(dim=0)
    return per_task.mean(), per_task.detach()
