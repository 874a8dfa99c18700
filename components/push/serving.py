"""Publish a blessed model under `<serving>/<version>/` and move the `<serving>/LATEST` pointer to it.

`run` is the step: it refuses a model whose evaluation did not bless it (blessing.json), so
the guard holds whoever calls it (the DAG's blessed branch, `recap push`, a script). Serving
polls LATEST (a small JSON: version, model URI, source, file count, time), so the pointer is
the commit: it is written only after every model file is copied. Older versions stay in
place for rollback (point LATEST back at one).
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from pydantic import Field

from components.common import storage
from components.common.config import StrictModel
from components.common.errors import CheckFailed, ConfigError, DataError, StorageError
from components.common.manifest import read_manifest
from components.evaluate.constants import BLESSING_FILE
from components.evaluate.constants import MANIFEST_KIND as EVALUATION_KIND
from components.push.constants import LATEST_FILE

log = logging.getLogger(__name__)


def serving_root(serving_uri: str, data_root: str) -> str:
    """The serving location: `serving_uri`, else `<data_root>/serving`; one of them is required."""
    if serving_uri:
        return serving_uri.rstrip("/")
    if data_root:
        return storage.join(data_root, "serving")
    raise ConfigError("push: set serving_uri (or data_root, which defaults it to <data_root>/serving)")


def push_model(model_uri: str, serving_uri: str, version: str, extra: dict[str, Any] | None = None) -> str:
    """Copy the model to `<serving_uri>/<version>/`, then point `<serving_uri>/LATEST` at it.

    The pointer is written last, so a server polling LATEST never sees a half-copied model.
    """
    files = storage.list_uris(model_uri)
    if not files:
        raise StorageError(f"{model_uri}: no model files to push")
    target = storage.join(serving_uri, version)
    copied = storage.copy_prefix(model_uri, target)
    pointer = {
        "version": version, "model_uri": target, "source_uri": model_uri, "files": len(copied),
        "pushed_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), **(extra or {}),
    }
    storage.write_json(storage.join(serving_uri, LATEST_FILE), pointer)
    log.info("pushed %d file(s) %s -> %s; LATEST -> %s", len(copied), model_uri, target, version)
    return target


class PushConfig(StrictModel):
    version: str = Field(min_length=1, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$",
                         description="the serving version (a folder name): the pipeline passes its run id")


def read_blessing(evaluation_uri: str) -> dict[str, Any]:
    """blessing.json of a complete evaluation output (its manifest written); names what is wrong."""
    manifest, directory = read_manifest(evaluation_uri)
    if manifest.kind != EVALUATION_KIND:
        raise DataError(f"{directory}: manifest kind is {manifest.kind!r}, expected {EVALUATION_KIND!r} (an evaluation)")
    blessing = storage.read_json(storage.join(directory, BLESSING_FILE))
    if not isinstance(blessing, dict) or not isinstance(blessing.get("blessed"), bool):
        raise DataError(f"{storage.join(directory, BLESSING_FILE)}: no boolean 'blessed'")
    return blessing


def run(model_uri: str, evaluation_uri: str, serving_uri: str, config: PushConfig,
        extra: dict[str, Any] | None = None) -> str:
    """Push the model at `model_uri` if the evaluation at `evaluation_uri` blessed it; returns its
    serving URI. `extra` adds fields to the LATEST pointer (it records `evaluation_uri` itself)."""
    blessing = read_blessing(evaluation_uri)
    if not blessing["blessed"]:
        raise CheckFailed(f"{evaluation_uri}: the model is not blessed, not pushed ({blessing.get('reason', 'no reason')})")
    return push_model(model_uri, serving_uri, config.version, extra={"evaluation_uri": evaluation_uri, **(extra or {})})
