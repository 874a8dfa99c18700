"""Publish a model under `<serving>/<version>/` and move the `<serving>/LATEST` pointer to it.

Serving polls LATEST (a small JSON: version, model URI, source, file count, time), so the
pointer is the commit: it is written only after every model file is copied. Older versions
stay in place for rollback (point LATEST back at one).
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from components.common import storage
from components.common.errors import ConfigError, StorageError

log = logging.getLogger(__name__)

LATEST_FILE = "LATEST"


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
