"""In-memory RecapBatches with a planted, learnable signal, for benchmarks and tests.

Global batch `g` is a pure function of (seed, g); rank r of W takes rows [r*B/W, (r+1)*B/W),
so 1 and N ranks see exactly the same global batches. No files are involved, which lets the
trainer's speed and sharding be measured apart from the input pipeline.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import torch
from torchrec import KeyedJaggedTensor

from components.common.schema import Schema
from components.records.batch import RecapBatch

BatchSource = Callable[[int], Iterator[RecapBatch]]  # start_batch -> this rank's batches


def _signal_weights(schema: Schema, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed + 7919)
    n_tasks = len(schema.tasks)
    return {
        "continuous": rng.normal(0, 1.0, (min(8, schema.group("continuous").length), n_tasks)),
        "binary": rng.normal(0, 1.0, (min(4, schema.group("binary").length), n_tasks)),
        "embedding": rng.normal(0, 1.0, (schema.embeddings[0].length, n_tasks)) if schema.embeddings else None,
        "bias": rng.uniform(-2.5, -0.5, n_tasks),
        "user_effect": rng.normal(0, 1.0, (64, n_tasks)),
    }


def global_batch(schema: Schema, batch_size: int, index: int, seed: int = 0) -> RecapBatch:
    """Global batch number `index`; labels drawn from a logistic model of a few features."""
    rng = np.random.default_rng([seed, index])
    weights = _signal_weights(schema, seed)
    n_cont, n_bin = schema.group("continuous").length, schema.group("binary").length
    continuous = rng.lognormal(0.0, 1.5, (batch_size, n_cont)).astype(np.float32)
    continuous *= rng.choice([-1.0, 1.0], continuous.shape, p=[0.2, 0.8]).astype(np.float32)
    binary = (rng.random((batch_size, n_bin)) < 0.3).astype(np.float32)
    embeddings = {e.name: rng.normal(0, 1, (batch_size, e.length)).astype(np.float32) for e in schema.embeddings}
    ids = {f.name: rng.integers(0, 64, batch_size) * 1_000_003 + 17 for f in schema.ids}

    logit = weights["bias"] + np.sign(continuous[:, :8]) * np.log1p(np.abs(continuous[:, :8])) @ weights["continuous"][: min(8, n_cont)] * 0.5
    logit = logit + binary[:, : weights["binary"].shape[0]] @ weights["binary"]
    if weights["embedding"] is not None:
        first = schema.embeddings[0].name
        logit = logit + embeddings[first] @ weights["embedding"] / np.sqrt(schema.embeddings[0].length)
    if schema.ids:
        user = ids[schema.ids[0].name] // 1_000_003
        logit = logit + weights["user_effect"][user]
    labels = (rng.random(logit.shape) < 1 / (1 + np.exp(-logit))).astype(np.float32)
    pos = np.array([t.pos_downsampling_rate for t in schema.tasks], dtype=np.float32)
    neg = np.array([t.neg_downsampling_rate for t in schema.tasks], dtype=np.float32)
    example_weights = labels / pos + (1 - labels) / neg

    names = [f.name for f in schema.ids]
    id_values = np.concatenate([ids[n] for n in names]) if names else np.zeros(0, dtype=np.int64)
    sparse = KeyedJaggedTensor.from_lengths_sync(
        keys=names, values=torch.from_numpy(id_values.astype(np.int64)),
        lengths=torch.ones(len(names) * batch_size, dtype=torch.int64),
    )
    return RecapBatch(
        continuous=torch.from_numpy(continuous), binary=torch.from_numpy(binary),
        discrete=torch.from_numpy(rng.integers(0, 100, (batch_size, schema.group("discrete").length))),
        embeddings={k: torch.from_numpy(v) for k, v in embeddings.items()},
        sparse_features=sparse, labels=torch.from_numpy(labels), weights=torch.from_numpy(example_weights),
    )


def rank_slice(batch: RecapBatch, rank: int, world_size: int) -> RecapBatch:
    """Rows [rank*B/W, (rank+1)*B/W) of a global batch, sparse features included."""
    size = batch.batch_size // world_size
    lo, hi = rank * size, (rank + 1) * size
    ids = batch.sparse_features.to_dict()
    keys = list(ids)
    sparse = KeyedJaggedTensor.from_lengths_sync(
        keys=keys,
        values=torch.cat([ids[k].values()[lo:hi] for k in keys]) if keys else torch.zeros(0, dtype=torch.int64),
        lengths=torch.ones(len(keys) * size, dtype=torch.int64),
    )
    return RecapBatch(
        continuous=batch.continuous[lo:hi], binary=batch.binary[lo:hi], discrete=batch.discrete[lo:hi],
        embeddings={k: v[lo:hi] for k, v in batch.embeddings.items()}, sparse_features=sparse,
        labels=batch.labels[lo:hi], weights=batch.weights[lo:hi],
    )


def synthetic_source(schema: Schema, global_batch_size: int, seed: int = 0, rank: int = 0,
                     world_size: int = 1, offset: int = 0, num_batches: int | None = None) -> BatchSource:
    """Endless (or `num_batches` long) per-rank batches; `offset` separates e.g. eval from train."""

    def batches(start_batch: int = 0) -> Iterator[RecapBatch]:
        index = start_batch
        while num_batches is None or index < num_batches:
            yield rank_slice(global_batch(schema, global_batch_size, offset + index, seed), rank, world_size)
            index += 1

    return batches
