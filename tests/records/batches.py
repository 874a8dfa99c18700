"""Turn RecapBatches back into feature columns, to compare them with the source rows."""

from __future__ import annotations

import numpy as np

from components.common.schema import Role
from tests.convert.rawdata import row_fingerprints


def batch_columns(schema, batches) -> dict[str, np.ndarray]:
    """Reassemble feature columns from RecapBatches (task labels only: that is what a batch has)."""
    parts: dict[str, list[np.ndarray]] = {}

    def add(name, value):
        parts.setdefault(name, []).append(np.asarray(value))

    for batch in batches:
        add("continuous", batch.continuous.numpy())
        add("binary", batch.binary.numpy().astype(np.int64))
        add("discrete", batch.discrete.numpy())
        for name, tensor in batch.embeddings.items():
            add(name, tensor.numpy())
        by_key = batch.sparse_features.to_dict()
        for spec in schema.ids:
            assert by_key[spec.name].lengths().tolist() == [1] * batch.batch_size
            add(spec.name, by_key[spec.name].values().numpy().reshape(-1, 1))
        for index, task in enumerate(schema.tasks):
            add(task.label, batch.labels[:, index].numpy().astype(np.int64).reshape(-1, 1))
    return {name: np.concatenate(values) for name, values in parts.items()}


class Exposed:
    """The schema restricted to what a batch exposes (labels of the tasks only)."""

    def __init__(self, schema):
        tasks = set(schema.task_names)
        self.features = [f for f in schema.features if f.role != Role.LABEL or f.name in tasks]


def fingerprints(schema, columns):
    return row_fingerprints(Exposed(schema), columns)
