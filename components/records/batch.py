"""The batch contract between the reader (train and evaluate) and the model.

A plain dataclass of tensors that TorchRec's train pipelines can move between devices
(`to`, `pin_memory`, `record_stream`: the `Pipelineable` interface). Column order of
`labels` and `weights` is the schema's task order.

ID features come in two forms. Raw (what the reader and evaluation see): one KJT key per
schema ID feature, the original int64 IDs. Hashed (what training feeds the model): one key per
embedding table, in table order, each ID mapped to its table row by `hash_ids`; the model's
embedding tables then read the batch's KJT as is, which TorchRec's train pipeline needs to move
the embedding input exchange out of the forward pass. `with_hashed_ids` turns one into the other.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields, replace

import torch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor
from torchrec.streamable import Pipelineable

from components.common.errors import DataError

# splitmix64's finalizer constants (0xbf58476d1ce4e5b9, 0x94d049bb133111eb) as signed int64.
_MIX1, _MIX2 = -4658895280553007687, -7723592293110705685


def _shift_right(x: torch.Tensor, bits: int) -> torch.Tensor:
    """Logical right shift of int64 (torch's >> is arithmetic)."""
    return (x >> bits) & ((1 << (64 - bits)) - 1)


def finalize64(x: torch.Tensor) -> torch.Tensor:
    """splitmix64's output mix in int64 ops, bit-identical to `components.common.hashing.finalize64`.

    Torch rather than numpy so the exported model can hash on the batch's device in its forward.
    """
    x = x ^ _shift_right(x, 30)
    x = x * _MIX1  # wraps modulo 2**64
    x = x ^ _shift_right(x, 27)
    x = x * _MIX2
    return x ^ _shift_right(x, 31)


def hash_ids(ids: torch.Tensor, num_embeddings: int) -> torch.Tensor:
    """Map raw int64 IDs (any range, sign) to rows [0, num_embeddings) with splitmix64 mixing."""
    return torch.remainder(finalize64(ids), num_embeddings)


@dataclass
class RecapBatch(Pipelineable):
    continuous: torch.Tensor  # [B, n_continuous] float32, raw values (may hold NaN/inf)
    binary: torch.Tensor  # [B, n_binary] float32 in {0, 1}
    discrete: torch.Tensor  # [B, n_discrete] int64
    embeddings: dict[str, torch.Tensor]  # schema embedding name -> [B, dim] float32
    sparse_features: KeyedJaggedTensor  # raw: schema ID feature names; hashed: table features. One value per row
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


def with_hashed_ids(batch: RecapBatch, tables: Sequence[tuple[str, int]]) -> RecapBatch:
    """`batch` with its raw IDs hashed to rows of `tables` ((ID feature, rows) in table order).

    The KJT is built with its stride and per-key lengths known (one ID per row), so neither
    TorchRec nor the model has to read lengths back from the device to split it.
    """
    kjt = batch.sparse_features
    rows, keys = batch.batch_size, list(kjt.keys())
    values = kjt.values()
    if values.numel() != rows * len(keys):
        raise DataError(f"ID features {keys}: expected one ID per row ({rows * len(keys)} values), "
                        f"got {values.numel()}")
    names = [feature for feature, _ in tables]
    for feature in names:
        if feature not in keys:
            raise DataError(f"ID feature {feature!r} of an embedding table is not in the batch's {keys}")
    if names != keys:  # the tables' features, key-major in table order
        values = torch.cat([values[keys.index(f) * rows : (keys.index(f) + 1) * rows] for f in names]) \
            if names else values[:0]
    # One pass over all IDs (a few large ops, not a few per table): each ID modulo its table's rows.
    sizes = torch.tensor([n for _, n in tables], dtype=torch.int64, device=values.device)
    hashed = torch.remainder(finalize64(values), sizes.repeat_interleave(rows))
    count = len(names)
    sparse = KeyedJaggedTensor(
        keys=names,
        values=hashed,
        lengths=torch.ones(rows * count, dtype=torch.int32, device=values.device),
        stride=rows,
        length_per_key=[rows] * count,
        offset_per_key=[rows * k for k in range(count + 1)],
    )
    return replace(batch, sparse_features=sparse)
