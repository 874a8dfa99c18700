"""Evaluation: streaming metrics, an HTML report and a blessing against a baseline.

`run(model_uri, data_uri, out_uri, config, baseline_uri=None) -> EvaluationResult` is the
step; the CLI (`recap evaluate`) and the KFP component wrap it. Imported lazily so the
metric modules can be used without loading torch.
"""

from __future__ import annotations

from typing import Any

__all__ = ["EvaluationResult", "run"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from components.evaluate import evaluator

        return getattr(evaluator, name)
    raise AttributeError(name)
