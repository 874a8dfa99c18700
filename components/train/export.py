"""Export: gather a committed (sharded) checkpoint into the exported model directory."""

from __future__ import annotations

from components.common.schema import Schema
from components.exported_model.model_dir import write_model_dir
from components.ranker.model import HeavyRanker
from components.train import checkpoint
from components.train.config import RecapConfig, config_to_yaml


def export_model(config: RecapConfig, schema: Schema, checkpoint_dir: str, step: int,
                 model_dir: str | None = None) -> str:
    """Load the checkpoint's model state into a plain (unsharded) model and publish it."""
    model = HeavyRanker(config.model, schema, sparse_device="cpu")
    state = {"model": model.state_dict()}
    checkpoint.load(checkpoint_dir, state, no_dist=True)
    model.load_state_dict(state["model"])
    return write_model_dir(model_dir or config.model_dir, model.state_dict(), config_to_yaml(config), schema,
                           step, source=checkpoint_dir)
