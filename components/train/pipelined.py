"""Optimizer steps through TorchRec's `TrainPipelineSparseDist` (`training.train_pipeline`).

The pipeline keeps three batches in flight: it copies batch i+2 to the GPU on a side stream and
starts batch i+1's embedding input exchange (the all-to-all of IDs to the ranks holding their
tables) on another, while batch i runs forward, backward and the optimizer step on the default
stream. It finds the sharded embedding tables by tracing the model's forward, which works
because their input is the batch's KJT as is (IDs hashed on the host, `feed`). On the CPU there
are no streams: the same stages run one after the other, with the same numbers as the plain loop.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
from torch import nn

from components.common.errors import ConfigError
from components.records.batch import RecapBatch
from components.train.config import TrainingConfig
from components.train.ranks import CheckedBatches

ForwardLoss = Callable[[RecapBatch], tuple[torch.Tensor, torch.Tensor]]  # batch -> (loss, per-task losses)


def uses_train_pipeline(training: TrainingConfig, device: torch.device, debug_loop: bool) -> bool:
    """Whether the steps go through the pipeline: `training.train_pipeline`, auto = on for CUDA."""
    if training.train_pipeline and training.gradient_accumulation > 1:
        raise ConfigError("training.train_pipeline: true needs training.gradient_accumulation: 1 "
                          f"(got {training.gradient_accumulation}); TorchRec's pipeline steps once per batch")
    if debug_loop or training.gradient_accumulation > 1:
        return False
    return device.type == "cuda" if training.train_pipeline is None else training.train_pipeline


class PipelinedSteps:
    """`next()` trains one optimizer step through the pipeline and returns its per-task losses (on the device)."""

    def __init__(self, dmp: nn.Module, optimizer: torch.optim.Optimizer, device: torch.device,
                 forward_loss: ForwardLoss, batches: CheckedBatches, done: int, total: int) -> None:
        from torchrec.distributed.train_pipeline import TrainPipelineSparseDist

        def forward(batch: RecapBatch) -> tuple[torch.Tensor, torch.Tensor]:
            loss, per_task = forward_loss(batch)
            return loss, per_task.detach().float()

        self.pipeline = TrainPipelineSparseDist(dmp, optimizer, device, execute_all_batches=True,
                                                custom_model_fwd=forward)
        self.feed = _step_batches(batches, done, total)

    def next(self) -> torch.Tensor:
        return self.pipeline.progress(self.feed)

    def pause(self) -> None:
        """Give the model its own forward back (evaluation calls it directly); `next` re-attaches it."""
        self.pipeline.detach()


def _step_batches(batches: CheckedBatches, done: int, total: int) -> Iterator[RecapBatch]:
    """One batch per step up to step `total`: the pipeline reads two ahead, never past the run's end."""
    for fetched in range(done, total):
        (batch,) = batches.next(total - fetched)
        yield batch
