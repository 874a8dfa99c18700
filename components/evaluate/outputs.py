"""The step's output documents (named in constants.py), and writing them with a manifest last."""

from __future__ import annotations

import json
import math
from typing import Any

from components.common import storage
from components.common.manifest import ManifestFile, manifest_uri, write_manifest
from components.evaluate.constants import (
    BLESSING_FILE,
    CLASSIFICATION_FILE,
    KFP_METRICS_FILE,
    MANIFEST_KIND,
    METRICS_FILE,
    REPORT_FILE,
)
from components.metrics.binary import finite_or_none

CONFUSION_CATEGORIES = ("negative", "positive")
KFP_TASK_SCALARS = ("auroc", "average_precision", "rce", "nrce", "log_loss", "calibration", "count", "positives")


def kfp_scalars(metrics: dict[str, Any], blessing: dict[str, Any]) -> dict[str, float]:
    """Flat scalars (`<task>.<metric>`, `ranking.gauc`, `blessed`); undefined values are left out."""
    scalars: dict[str, float] = {}
    for task, values in metrics["tasks"].items():
        for name in KFP_TASK_SCALARS:
            value = values.get(name)
            if value is not None and math.isfinite(float(value)):
                scalars[f"{task}.{name}"] = float(value)
    gauc = (metrics.get("ranking") or {}).get("gauc")
    if gauc is not None and math.isfinite(float(gauc)):
        scalars["ranking.gauc"] = float(gauc)
    scalars["examples"] = float(metrics["examples"])
    scalars["examples_per_s"] = float(metrics["examples_per_s"])
    scalars["blessed"] = 1.0 if blessing["blessed"] else 0.0
    return scalars


def classification(metrics: dict[str, Any]) -> dict[str, Any]:
    """Per task: ROC as [{fpr, tpr, threshold}] and the confusion matrix, plain data for KFP."""
    return {
        task: {
            "roc": values["curves"]["roc"],
            "confusion_matrix": {
                "threshold": values["threshold"],
                "categories": list(CONFUSION_CATEGORIES),
                "matrix": values["confusion_matrix"],  # rows actual, columns predicted
            },
        }
        for task, values in metrics["tasks"].items()
    }


def _json_bytes(value: Any) -> bytes:
    return (json.dumps(finite_or_none(value), indent=2, sort_keys=False, allow_nan=False) + "\n").encode()


def write_outputs(out_uri: str, schema_hash: str, metrics: dict[str, Any], blessing: dict[str, Any],
                  report_html: str) -> list[str]:
    """Write every document, then the manifest that lists them; returns the URIs written.

    A previous run's manifest is removed first, so a crash mid-way never leaves a directory
    that looks complete while mixing new and old documents (blessing.json among them).
    """
    storage.delete(manifest_uri(out_uri))
    documents = {
        METRICS_FILE: _json_bytes(metrics),
        KFP_METRICS_FILE: _json_bytes(kfp_scalars(metrics, blessing)),
        CLASSIFICATION_FILE: _json_bytes(classification(metrics)),
        REPORT_FILE: report_html.encode("utf-8"),
        BLESSING_FILE: _json_bytes(blessing),
    }
    files, uris = [], []
    for name, data in documents.items():
        uri = storage.join(out_uri, name)
        sha = storage.write_bytes(uri, data)
        files.append(ManifestFile(path=name, records=1, bytes=len(data), sha256=sha))
        uris.append(uri)
    write_manifest(out_uri, kind=MANIFEST_KIND, schema_hash=schema_hash, files=files,
                   extra={"blessed": bool(blessing["blessed"])})
    return uris
