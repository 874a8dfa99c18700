"""The oracle: how well the true probabilities themselves score, per task.

A trained model is judged against this ceiling (AUROC, log loss, RCE). The scores come from
the same metric core evaluation uses (components.metrics.binary: one logit binning, one
clipping), so `make run`'s lift column divides like by like; the core streams, so memory
stays flat however many rows are generated.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from components.common.errors import DataError
from components.datagen.constants import ORACLE_FILE
from components.metrics.binary import BinaryMetricAccumulator, finite_or_none, read_task_document


class OracleAccumulator:
    """Streaming AUROC, log loss, RCE and positive rate of the true probabilities, one per label."""

    def __init__(self, labels: list[str] | tuple[str, ...]) -> None:
        self.labels = tuple(labels)
        self.accumulators = [BinaryMetricAccumulator(label) for label in self.labels]
        self.count = 0

    def add(self, labels: np.ndarray, probabilities: np.ndarray) -> None:
        """labels [R, L] in {0, 1}; probabilities [R, L] true P(y=1)."""
        for index, accumulator in enumerate(self.accumulators):
            accumulator.update(probabilities[:, index], labels[:, index])
        self.count += labels.shape[0]

    def task(self, index: int) -> dict[str, Any]:
        metrics = self.accumulators[index].compute()
        return finite_or_none({  # JSON has no NaN: an undefined metric (no positives) is null
            "auroc": metrics.auroc, "log_loss": metrics.log_loss, "positive_rate": metrics.mean_label,
            "positives": metrics.positives, "count": metrics.count, "rce": metrics.rce,
        })

    def to_json(self, schema_name: str, seed: int, task_labels: list[str], shift: float) -> dict[str, Any]:
        tasks = {name: self.task(i) for i, name in enumerate(self.labels) if name in task_labels}
        others = {name: self.task(i) for i, name in enumerate(self.labels) if name not in task_labels}
        return {"schema": schema_name, "seed": seed, "rows": self.count, "shift": shift,
                "tasks": tasks, "other_labels": others}


def read_oracle(uri: str) -> dict[str, Any]:
    """Load `oracle.json` given its URI or the dataset directory that holds it."""
    return read_task_document(uri, ORACLE_FILE, "no oracle (was this data made by `recap data generate`?)",
                              DataError)
