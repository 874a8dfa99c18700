"""A torchrun worker that counts DDP's gradient all-reduces per optimizer step.

Usage: torchrun ... tests/train/allreduce_count_worker.py <config.yaml> <result.json>
Trains the config with gradient_accumulation 1, then 2, in one process group. A DDP comm hook
(DDP calls it once per gradient bucket it all-reduces, in place of its own all-reduce) counts the
buckets; `_Optimizers.step` closes each step's count. Rank 0 writes {"1": [...], "2": [...]}.
"""

from __future__ import annotations

import json
import sys

from torch.distributed.algorithms.ddp_comm_hooks import default_hooks
from torch.nn.parallel import DistributedDataParallel

from components.train import loop
from components.train.__main__ import quiet_libraries
from components.train.config import load_train_config
from components.train.distributed import init_distributed, shutdown_distributed
from components.train.synthetic import synthetic_source

per_step: list[int] = [0]


def counting_hook(state, bucket):
    per_step[-1] += 1
    return default_hooks.allreduce_hook(state, bucket)


def instrument() -> None:
    built = loop.build_training_model

    def build(*args, **kwargs):
        model, dmp, optimizers = built(*args, **kwargs)
        ddp = dmp._dmp_wrapped_module
        assert isinstance(ddp, DistributedDataParallel), type(ddp)
        ddp.register_comm_hook(None, counting_hook)
        return model, dmp, optimizers

    stepped = loop._Optimizers.step

    def step(self):
        stepped(self)
        per_step.append(0)

    loop.build_training_model = build
    loop._Optimizers.step = step


def main(config_path: str, result_path: str) -> int:
    quiet_libraries()
    instrument()
    env = init_distributed()
    counts = {}
    for accumulation in (1, 2):
        config = load_train_config(config_path, {"training.gradient_accumulation": accumulation,
                                                 "training.save_dir": f"{result_path}.{accumulation}"})
        schema = config.load_schema()
        size = config.train_data.global_batch(env.world_size)
        per_step[:] = [0]
        loop.train(config, schema, env, synthetic_source(schema, size, 0, env.rank, env.world_size))
        counts[str(accumulation)] = per_step[:-1]  # the last entry is opened after the last step
    if env.is_chief:
        with open(result_path, "w") as handle:
            json.dump(counts, handle)
    shutdown_distributed()
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
