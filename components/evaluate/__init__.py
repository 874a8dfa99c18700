"""Evaluation: streaming metrics, an HTML report and a blessing against a baseline.

`run(model_uri, data_uri, out_uri, config, baseline_uri=None) -> EvaluationResult` is the
step; the CLI (`recap evaluate`) and the KFP component wrap it. Imported lazily so the
metric modules can be used without loading torch.
"""

from __future__ import annotations

import logging
from typing import Any

__all__ = ["EvaluationResult", "check_data", "run"]

log = logging.getLogger(__name__)


def check_data(data_uri: str) -> None:
    """The eval split's first records against the data contract (components.records.sample), before
    torch, TensorFlow and the model load: a split broken from its start fails in well under a second.
    Skipped when the schema its manifest names is not one this machine has (the reader checks anyway)."""
    from components.common.errors import RecapError
    from components.common.manifest import read_manifest
    from components.common.schema import load_schema
    from components.records.sample import check_split_sample

    name = read_manifest(data_uri)[0].extra.get("schema")
    try:
        schema = load_schema(name)
    except (RecapError, TypeError) as exc:
        log.info("no sample check of %s: schema %r not found here (%s)", data_uri, name, exc)
        return
    check_split_sample(data_uri, schema)


def run(model_uri: str, data_uri: str, out_uri: str, config: Any, baseline_uri: str | None = None) -> Any:
    """`evaluator.run` after `check_data`; imports torch only once the data passed."""
    check_data(data_uri)
    from components.evaluate import evaluator

    return evaluator.run(model_uri, data_uri, out_uri, config, baseline_uri)


def __getattr__(name: str) -> Any:
    if name == "EvaluationResult":
        from components.evaluate import evaluator

        return getattr(evaluator, name)
    raise AttributeError(name)
