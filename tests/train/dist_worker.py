"""A torchrun worker for the integration tests: the real trainer fed by in-memory synthetic batches.

Usage: torchrun ... tests/train/dist_worker.py --config_path=... --result=out.json [trainer overrides]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys

from components.common.logs import setup_logging
from components.train.__main__ import add_trainer_arguments, overrides_from, quiet_libraries
from components.train.config import load_train_config
from components.train.distributed import init_distributed, shutdown_distributed
from components.train.loop import train
from components.train.synthetic import synthetic_source


def main() -> int:
    parser = argparse.ArgumentParser()
    add_trainer_arguments(parser)
    parser.add_argument("--result", required=True)
    parser.add_argument("--data_seed", type=int, default=0)
    args = parser.parse_args()
    setup_logging()
    quiet_libraries()
    config = load_train_config(args.config_path, overrides_from(args))
    env = init_distributed()
    schema = config.load_schema()
    size = config.train_data.global_batch_size
    train_batches = synthetic_source(schema, size, args.data_seed, env.rank, env.world_size)
    eval_batches = synthetic_source(schema, size, args.data_seed, env.rank, env.world_size, offset=10**6)
    result = train(config, schema, env, train_batches, eval_batches, debug_loop=args.debug_loop)
    if env.is_chief:
        with open(args.result, "w") as handle:
            json.dump(dataclasses.asdict(result), handle)
    shutdown_distributed()
    return 0


if __name__ == "__main__":
    sys.exit(main())
