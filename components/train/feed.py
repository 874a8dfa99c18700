"""Batches on the host, on their way to the device: IDs hashed to table rows, memory pinned for CUDA.

Every training source (the tf.data reader, the tf.data service, in-memory synthetic batches)
goes through here right after it yields a batch, so all of them reach the model the same way:
- IDs hashed to embedding rows (`records.batch.with_hashed_ids`) with the model's tables, on the
  host. The model's tables then read the batch's KJT as is, which TorchRec's train pipeline
  needs, and no hashing or KJT rebuild (two device-to-host syncs) is left in the forward pass.
- On CUDA, the batch copied into page-locked (pinned) host memory: only from there is a
  `non_blocking` copy to the GPU asynchronous; from pageable memory the copy waits for the host.
  On the CPU nothing is copied.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch

from components.records.batch import RecapBatch, with_hashed_ids
from components.train.synthetic import BatchSource


def host_batch(batch: RecapBatch, tables: Sequence[tuple[str, int]], device: torch.device) -> RecapBatch:
    """`batch` as the training step copies it to `device`: IDs hashed, pinned when `device` is CUDA."""
    batch = with_hashed_ids(batch, tables)
    return batch.pin_memory() if device.type == "cuda" else batch


def fed_source(source: BatchSource, tables: Sequence[tuple[str, int]], device: torch.device) -> BatchSource:
    """`source` with every batch passed through `host_batch` (the source is opened when called)."""

    def batches(start: int) -> Iterator[RecapBatch]:
        return _fed(source(start), tables, device)

    return batches


def _fed(inner: Iterator[RecapBatch], tables: Sequence[tuple[str, int]], device: torch.device) -> Iterator[RecapBatch]:
    try:
        for batch in inner:
            yield host_batch(batch, tables, device)
    finally:
        close = getattr(inner, "close", None)
        if close is not None:
            close()  # the reader's prefetch and cache go with this generator
