"""`run`: the train step over URIs, as every rank runs it (torchrun starts one process per rank).

Joins the process group from the torchrun environment (gloo on CPU, nccl on GPU; a lone
process makes a world of one), trains from the converted splits, checkpoints, and exports the
model at the end. `python -m components.train` is its command-line wrapper.
"""

from __future__ import annotations

import datetime as dt
import logging

import torch

from components.records.layout import ModelReads
from components.train.config import RecapConfig, config_to_yaml, with_overrides
from components.train.distributed import init_distributed, shutdown_distributed
from components.train.loop import TrainResult, reader_source, train

log = logging.getLogger("components.train")


def run(train_uri: str, validation_uri: str | None, out_uri: str, config: RecapConfig,
        debug_loop: bool = False) -> TrainResult:
    """Train on the split at `train_uri` (evaluating on `validation_uri`, if any); checkpoints and
    TensorBoard logs go under `out_uri`, the model to `training.model_dir` (default `<out_uri>/model`).

    The URIs replace the config's `train_data.inputs`, `validation_data.inputs` and
    `training.save_dir`, as the trainer's flags do.
    """
    config = with_overrides(config, {"train_data.inputs": train_uri, "validation_data.inputs": validation_uri,
                                     "training.save_dir": out_uri}, source="train.run")
    env = init_distributed()
    if env.is_chief:
        print(f"recap trainer started at {dt.datetime.now().astimezone().isoformat(timespec='seconds')}", flush=True)
        log.info("resolved config:\n%s", config_to_yaml(config))
    if config.training.num_threads:
        torch.set_num_threads(config.training.num_threads)
    schema = config.load_schema()
    seed = config.training.seed
    reads = ModelReads.of(config.model.featurization)
    train_batches = reader_source(config.train_data, schema, env, seed, "train_data", reads)
    eval_batches = (reader_source(config.validation_data, schema, env, seed, "validation_data", reads)
                    if config.validation_data else None)
    result = train(config, schema, env, train_batches, eval_batches, debug_loop=debug_loop)
    if env.is_chief:
        log.info("training done step=%d model_dir=%s", result.step, result.model_dir)
    shutdown_distributed()
    return result
