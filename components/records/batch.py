"""The batch contract between the reader (train and evaluate) and the model.

A plain dataclass of tensors that TorchRec's train pipelines can move between devices
(`to`, `pin_memory`, `record_stream`). Column order of `labels` and `weights` is the
schema's task order.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor


@dataclass
class RecapBatch:
    continuous: torch.Tensor  # [B, n_continuous] float32, raw values (may hold NaN/inf)
    binary: torch.Tensor  # [B, n_binary] float32 in {0, 1}
    discrete: torch.Tensor  # [B, n_discrete] int64
    embeddings: dict[str, torch.Tensor]  # schema embedding name -> [B, dim] float32
    sparse_features: KeyedJaggedTensor  # keys: schema ID feature names, one value per row
    labels: torch.Tensor  # [B, n_tasks] float32 in {0, 1}
    weights: torch.Tensor  # [B, n_tasks] float32: y/pos_rate + (1-y)/neg_rate

    @property
    def batch_size(self) -> int:
        return int(self.labels.shape[0])

    def _map(self, fn) -> RecapBatch:
        values = {}
        for field in fields(self):
            value = getattr(self, field.name)
            values[field.name] = {k: fn(v) for k, v in value.items()} if isinstance(value, dict) else fn(value)
        return RecapBatch(**values)

    def to(self, device: torch.device, non_blocking: bool = False) -> RecapBatch:
        return self._map(lambda t: t.to(device=device, non_blocking=non_blocking))

    def pin_memory(self) -> RecapBatch:
        return self._map(lambda t: t.pin_memory())

    def record_stream(self, stream: torch.Stream) -> None:
        self._map(lambda t: t.record_stream(stream) or t)
