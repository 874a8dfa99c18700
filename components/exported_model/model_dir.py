"""The exported model directory: what training writes once and evaluation and serving load.

`<model_dir>/` holds weights.pt (the unsharded state_dict), config.yaml (the resolved trainer
config; its `model` section rebuilds the network), schema.yaml (the data contract it was
trained on) and export.json (schema hash and name, tasks, step, created_at), written last: a
model dir without it is incomplete. Loading runs in one process on CPU and imports nothing of
training (no process group, DMP, distributed checkpoint or optimizer).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import logging
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import torch
import yaml

from components.common import storage
from components.common.config import parse_config
from components.common.errors import SchemaError, StorageError
from components.common.schema import Schema, load_schema
from components.ranker import layers as ranker_layers
from components.ranker import model as ranker_model
from components.ranker.config import ModelConfig
from components.ranker.model import HeavyRanker

log = logging.getLogger(__name__)

WEIGHTS = "weights.pt"
CONFIG = "config.yaml"
SCHEMA = "schema.yaml"
EXPORT_INFO = "export.json"


def model_code_hash() -> str:
    """Identity of the code that gives weights their meaning (model.py and layers.py).

    Weights whose shapes still fit can load into changed code silently; comparing this hash
    on load turns that into a visible warning.
    """
    digest = hashlib.sha256()
    for module in (ranker_model, ranker_layers):
        digest.update(Path(module.__file__).read_bytes())
    return digest.hexdigest()[:16]


def _package_version() -> str:
    try:
        return metadata.version("recap-pipeline")
    except metadata.PackageNotFoundError:
        return "unknown"


@dataclass(frozen=True)
class ExportedModel:
    model: HeavyRanker  # eval mode, CPU, plain EmbeddingBagCollection
    config: ModelConfig
    schema: Schema
    step: int
    uri: str


def write_model_dir(model_dir: str, weights: dict[str, torch.Tensor], config_yaml: str, schema: Schema,
                    step: int, source: str) -> str:
    """Publish weights, config and schema under model_dir, export.json last.

    `config_yaml` is the resolved trainer config (its `model` section must build the network
    whose state_dict `weights` is); `source` names where the weights came from (a checkpoint).
    """
    buffer = io.BytesIO()
    torch.save(weights, buffer)
    if storage.exists(storage.join(model_dir, EXPORT_INFO)):
        storage.delete(storage.join(model_dir, EXPORT_INFO))  # unpublish the old model first
    storage.write_bytes(storage.join(model_dir, WEIGHTS), buffer.getvalue())
    storage.write_text(storage.join(model_dir, CONFIG), config_yaml)
    storage.write_text(storage.join(model_dir, SCHEMA), yaml.safe_dump(schema.to_json(), sort_keys=False))
    storage.write_json(storage.join(model_dir, EXPORT_INFO), {
        "schema_hash": schema.hash, "schema_name": schema.name, "tasks": list(schema.task_names),
        "step": step, "checkpoint": source,
        "model_code_hash": model_code_hash(), "recap_version": _package_version(),
        "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    })
    log.info("exported model step=%d uri=%s bytes=%d", step, model_dir, len(buffer.getvalue()))
    return model_dir


def load_exported_model(model_uri: str) -> ExportedModel:
    """Load an exported model (local or gs://) into a plain nn.Module in eval mode on CPU."""
    info_uri = storage.join(model_uri, EXPORT_INFO)
    try:
        info = storage.read_json(info_uri)
    except FileNotFoundError as exc:
        raise StorageError(f"{info_uri}: not found; {model_uri} is not an exported model (or incomplete)") from exc
    schema_uri = storage.join(model_uri, SCHEMA)
    schema = load_schema(schema_uri)
    if schema.hash != info["schema_hash"]:
        raise SchemaError(f"{schema_uri}: schema hash {schema.hash} differs from export.json's {info['schema_hash']}")
    config_uri = storage.join(model_uri, CONFIG)
    trainer_config = yaml.safe_load(storage.read_text(config_uri))
    if not isinstance(trainer_config, dict) or "model" not in trainer_config:
        raise SchemaError(f"{config_uri}: no `model` section; not an exported recap model")
    config = parse_config(trainer_config["model"], ModelConfig, f"{config_uri}: model")
    exported_code = info.get("model_code_hash")
    if exported_code != model_code_hash():
        log.warning("%s was exported by other model code (model_code_hash %s, this code %s, "
                    "recap %s): check that the weights mean the same here",
                    model_uri, exported_code, model_code_hash(), info.get("recap_version", "unknown"))
    model = HeavyRanker(config, schema, sparse_device="cpu")
    weights = torch.load(io.BytesIO(storage.read_bytes(storage.join(model_uri, WEIGHTS))),
                         map_location="cpu", weights_only=True)
    model.load_state_dict(weights)
    model.eval()
    return ExportedModel(model=model, config=config, schema=schema, step=int(info["step"]), uri=model_uri)
