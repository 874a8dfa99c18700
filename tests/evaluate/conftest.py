"""Synthetic eval batches (RecapBatch) and model outputs with a known signal, for the evaluator."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from components.common.schema import load_schema
from components.records.batch import RecapBatch


@pytest.fixture(scope="session")
def local_schema():
    return load_schema("local")


def synthetic_batches(schema, n: int, batch_size: int, seed: int = 0, users: int = 200,
                      neg_rate: float = 1.0):
    """Yield (batch, outputs): labels drawn from true probabilities, outputs a noisy model of them."""
    rng = np.random.default_rng(seed)
    tasks = len(schema.tasks)
    base = np.linspace(-1.0, -4.0, tasks)
    for start in range(0, n, batch_size):
        b = min(batch_size, n - start)
        z = rng.normal(size=(b, 1)) + rng.normal(size=(b, tasks))
        true = 1 / (1 + np.exp(-(base + 1.5 * z)))
        labels = (rng.random((b, tasks)) < true).astype(np.float32)
        logits = base + 1.5 * z + rng.normal(scale=0.7, size=(b, tasks))
        probabilities = 1 / (1 + np.exp(-logits))
        r = neg_rate  # numeric calibration with pos_rate 1: p*r / (1 - p + r*p)
        calibrated = probabilities * r / (1 - probabilities + r * probabilities)
        weights = labels + (1 - labels) / neg_rate
        ids = {f.name: rng.integers(0, users if f.name == "meta__user_id" else 10**9, size=b)
               for f in schema.ids}
        sparse = KeyedJaggedTensor.from_lengths_sync(
            keys=list(ids), values=torch.from_numpy(np.concatenate(list(ids.values()))),
            lengths=torch.ones(b * len(ids), dtype=torch.int32))
        batch = RecapBatch(
            continuous=torch.zeros(b, schema.group("continuous").length),
            binary=torch.zeros(b, schema.group("binary").length),
            discrete=torch.zeros(b, schema.group("discrete").length, dtype=torch.int64),
            embeddings={e.name: torch.zeros(b, e.length) for e in schema.embeddings},
            sparse_features=sparse,
            labels=torch.from_numpy(labels),
            weights=torch.from_numpy(weights.astype(np.float32)),
        )
        outputs = {"logits": torch.from_numpy(logits), "probabilities": torch.from_numpy(probabilities),
                   "calibrated_probabilities": torch.from_numpy(calibrated)}
        yield batch, outputs
