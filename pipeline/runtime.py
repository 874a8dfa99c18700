"""What KFP component bodies call besides the step functions: where large data lives and the
artifact bookkeeping. No `kfp` import (runs in every image).

Large data (TFRecords, checkpoints, the exported model) is written through `storage`
straight to object storage, never through KFP's artifact copy:
- with `data_root` empty, under the output artifact's own URI (gs://<pipeline root>/... on a
  cluster; a local path under kfp.local);
- with `data_root` set (e.g. gs://bucket/recap), under `<data_root>/<task>-<hash>/<output>`,
  so consumers do not download it through the KFP launcher, and local runs can use gs://.
The artifact records the location in `metadata["data_uri"]` and in a small `_LOCATION.json`
inside the artifact directory (so the KFP launcher always has a local file to upload).

`storage` speaks gs:// and local paths only. A KFP install whose pipeline root is MinIO or S3
(`minio://...`, `s3://...`, e.g. KFP standalone on kind) therefore needs `data_root` set to a
gs:// URI (on kind: the in-cluster emulator's bucket); `check_data_root` fails the first step
with that advice instead of letting a later one write `minio://...` as a relative local path.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import time
from collections.abc import Callable
from typing import Any, TypeVar

from components.common import storage
from components.common.errors import ConfigError, RecapError
from components.trainer_command.launch_shape import processes_per_node

log = logging.getLogger(__name__)
T = TypeVar("T")

LOCATION_FILE = "_LOCATION.json"
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
STORAGE_SCHEMES = ("gs", "file")  # and scheme-less local paths


def _unsupported(uri: str) -> str | None:
    match = _SCHEME.match(uri)
    return match.group(1) if match and match.group(1) not in STORAGE_SCHEMES else None


def check_data_root(artifact_uri: str, data_root: str) -> None:
    """Fail clearly when large data would go where `storage` cannot write (see module doc)."""
    if data_root:
        if scheme := _unsupported(data_root):
            raise ConfigError(f"data_root {data_root}: {scheme}:// is not supported; use gs://BUCKET/PATH")
        return
    if scheme := _unsupported(artifact_uri):
        raise ConfigError(
            f"data_root is empty, so large data would go under the pipeline root ({artifact_uri}), and "
            f"{scheme}:// is not supported (gs:// and local paths are); set the data_root parameter to a "
            "gs:// URI (on kind: the emulator's bucket, e.g. gs://recap-local/recap)")


def data_location(artifact_uri: str, data_root: str) -> str:
    """Where a step writes the large data behind the output artifact at `artifact_uri`."""
    check_data_root(artifact_uri, data_root)
    if not data_root:
        return artifact_uri.rstrip("/")
    parts = artifact_uri.rstrip("/").split("/")
    task, output = (parts[-2], parts[-1]) if len(parts) >= 2 else ("task", parts[-1])
    digest = hashlib.sha256(artifact_uri.encode()).hexdigest()[:10]
    return storage.join(data_root, f"{task}-{digest}", output)


def data_uri(artifact: Any) -> str:
    """The data location of an input artifact (its `data_uri`, else its own URI)."""
    return str((artifact.metadata or {}).get("data_uri") or artifact.uri).rstrip("/")


def record_location(artifact: Any, location: str, **metadata: Any) -> None:
    """Point the output artifact at `location` (metadata + `_LOCATION.json` in its directory)."""
    artifact.metadata["data_uri"] = location
    artifact.metadata.update({k: v for k, v in metadata.items() if v is not None})
    os.makedirs(artifact.path, exist_ok=True)
    with open(os.path.join(artifact.path, LOCATION_FILE), "w") as handle:
        json.dump({"data_uri": location, **metadata}, handle, indent=2, sort_keys=True, default=str)


def log_scalars(metrics: Any, values: dict[str, Any]) -> None:
    """Copy finite numeric values into a KFP Metrics artifact (booleans become 0/1)."""
    for key, value in sorted(values.items()):
        if isinstance(value, bool):
            value = int(value)
        if isinstance(value, int | float) and value == value and abs(value) != float("inf"):
            metrics.log_metric(key, float(value))
    if metrics.uri and "://" not in metrics.uri:
        # Also as the artifact's file: kfp.local's cache counts an output whose local file is
        # missing as a miss, so without it a rerun would redo validate instead of reusing it.
        os.makedirs(os.path.dirname(metrics.path) or ".", exist_ok=True)
        with open(metrics.path, "w") as handle:
            json.dump(metrics.metadata, handle, indent=2, sort_keys=True)


def log_classification(artifact: Any, classification: dict[str, Any], task: str = "") -> str:
    """Log one task's ROC curve and confusion matrix into a KFP ClassificationMetrics artifact.

    KFP shows one curve per artifact: the chosen task (default: the first) is logged, its name
    recorded in the metadata; every task's curves stay in the evaluation outputs.
    """
    if not classification:
        return ""
    task = task if task in classification else next(iter(classification))
    entry = classification[task]
    roc = entry.get("roc") or []
    if roc:
        artifact.log_roc_curve(
            fpr=[float(p["fpr"]) for p in roc],
            tpr=[float(p["tpr"]) for p in roc],
            threshold=[float(min(max(p["threshold"], -1e30), 1e30)) for p in roc],
        )
    matrix = entry.get("confusion_matrix") or {}
    if matrix.get("categories") and matrix.get("matrix"):
        artifact.log_confusion_matrix(list(matrix["categories"]), [list(map(int, r)) for r in matrix["matrix"]])
    artifact.metadata["task"] = task
    return task


def anomaly_summary(errors: list[Any], raw_uri: str, limit: int = 20) -> str:
    """The validation errors as the message a failed run shows (`ok` when there are none)."""
    if not errors:
        return "ok"
    lines = [f"{a.code} {a.column or '-'}: {a.message}" for a in errors[:limit]]
    more = [f"... and {len(errors) - limit} more"] if len(errors) > limit else []
    first = errors[0]
    example = first.examples[0] if first.examples else {}
    where = " ".join(part for part in (example.get("file"), f"row {example['row']}" if "row" in example else None,
                                       f"column {first.column!r}" if first.column else None) if part)
    head = (f"{len(errors)} validation error(s) in {raw_uri}; first: {first.code}{' at ' + where if where else ''}"
            f" ({first.message})")
    return "\n".join([head, *lines, *more])


def copy_file(src_uri: str, local_path: str) -> None:
    """Put a small output (an HTML report) where KFP expects the artifact's file."""
    os.makedirs(os.path.dirname(local_path) or ".", exist_ok=True)
    storage.download(src_uri, local_path)



SHARDS_PER_RANK = 4  # every rank interleaves a few gzip streams of its own


def ranks(num_workers: int, procs_per_worker: int, gpus_per_worker: int) -> int:
    """The training job's ranks: nodes x processes per node (the launcher's rule for 0)."""
    return max(num_workers, 1) * processes_per_node(procs_per_worker, gpus_per_worker)


def shards_for_ranks(settings: Any, ranks: int) -> Any:
    """Convert settings with at least SHARDS_PER_RANK shards per rank, unless `shards` was set."""
    if "shards" in settings.model_fields_set:
        return settings
    return settings.model_copy(update={"shards": max(settings.shards, ranks * SHARDS_PER_RANK)})


STEP_ATTEMPTS_ENV = "RECAP_STEP_ATTEMPTS"  # attempts of a data step's work on a transient fault (default 3)
STEP_BACKOFF_ENV = "RECAP_STEP_BACKOFF_S"  # first pause between them (default 30 s, doubling)


def retry_transient(work: Callable[[], T], what: str) -> T:
    """Run a data step's work; repeat it only after a transient fault (an object-store outage that
    outlasted the client's own retries). A data, config or usage error fails at once.

    Data steps carry no KFP retry (docs/architecture.md, "Retries"): KFP would repeat every
    failure alike, turning a one-second data error into minutes. This loop is their retry.
    """
    attempts = max(1, int(os.environ.get(STEP_ATTEMPTS_ENV, "3")))
    pause = float(os.environ.get(STEP_BACKOFF_ENV, "30"))
    for attempt in range(1, attempts + 1):
        try:
            return work()
        except RecapError as exc:
            if not exc.transient or attempt == attempts:
                raise
            log.warning("%s: transient fault (attempt %d/%d), retrying in %.0f s: %s", what, attempt, attempts,
                        pause, exc)
            time.sleep(pause)
            pause *= 2
    raise AssertionError("unreachable")
