"""A torchrun worker: the same run through the plain loop, then through TorchRec's train pipeline.

Usage: torchrun ... tests/train/pipeline_worker.py <config.yaml> <result.json>
Both runs share one process group; rank 0 writes {"plain": history, "pipeline": history}.
"""

from __future__ import annotations

import json
import sys

from components.common.logs import setup_logging
from components.train.config import load_train_config
from components.train.distributed import init_distributed, shutdown_distributed
from components.train.loop import train
from components.train.synthetic import synthetic_source


def main(config_path: str, result_path: str) -> int:
    setup_logging()
    env = init_distributed()
    histories = {}
    for name, pipelined in (("plain", False), ("pipeline", True)):
        config = load_train_config(config_path, {"training.train_pipeline": pipelined,
                                                 "training.save_dir": f"{result_path}.{name}"})
        schema = config.load_schema()
        size = config.train_data.global_batch(env.world_size)
        result = train(config, schema, env, synthetic_source(schema, size, 0, env.rank, env.world_size),
                       synthetic_source(schema, size, 0, env.rank, env.world_size, offset=10**6))
        histories[name] = {"history": result.history, "eval_losses": result.eval_losses}
    if env.is_chief:
        with open(result_path, "w") as handle:
            json.dump(histories, handle)
    shutdown_distributed()
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
