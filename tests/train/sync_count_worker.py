"""A rank that trains the tiny model and counts, per step, the calls of our code that wait for the device.

Usage: python tests/train/sync_count_worker.py CONFIG OUT_JSON (RANK/WORLD_SIZE/MASTER_* set by the test).

Counted: `Tensor.item`, `.cpu`, `.tolist`, `.numpy` and torch.distributed collectives, when called
from a module under components/ (torch's, torchrec's and DDP's own calls are not ours to remove
here). Each of these makes the host wait for the device on a GPU (a collective on nccl waits when
its result is read, which `every_rank` does at once). Steps are delimited by the calls to
`loop.train_step`: step k's count is everything from its train_step call to the next one,
i.e. the step, its bookkeeping, and the fetch of the next step's batches.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

import torch
import torch.distributed as dist

from components.train import loop
from components.train.__main__ import quiet_libraries
from components.train.config import load_train_config
from components.train.distributed import init_distributed, shutdown_distributed
from components.train.synthetic import synthetic_source

OURS = str(Path(loop.__file__).resolve().parents[1])  # components/
COLLECTIVES = ("all_reduce", "broadcast", "all_gather", "all_gather_object", "broadcast_object_list", "barrier",
               "reduce_scatter", "all_to_all", "gather", "scatter")
calls: Counter[str] = Counter()


def _from_our_code() -> bool:
    frame = sys._getframe(2)
    return frame.f_code.co_filename.startswith(OURS)


def counting(owner, name: str, label: str) -> None:
    original = getattr(owner, name)

    def counted(*args, **kwargs):
        if _from_our_code():
            calls[label] += 1
        return original(*args, **kwargs)

    setattr(owner, name, counted)


def main(config_path: str, out: str) -> int:
    quiet_libraries()
    config = load_train_config(config_path)
    env = init_distributed()
    schema = config.load_schema()
    for name in ("item", "cpu", "tolist", "numpy"):
        counting(torch.Tensor, name, f"Tensor.{name}")
    for name in COLLECTIVES:
        counting(dist, name, f"dist.{name}")
    per_step: list[dict[str, int]] = []
    step_started = loop.train_step

    def train_step(*args, **kwargs):
        per_step.append(dict(calls))
        calls.clear()
        return step_started(*args, **kwargs)

    loop.train_step = train_step
    size = config.train_data.global_batch(env.world_size)
    loop.train(config, schema, env, synthetic_source(schema, size, 0, env.rank, env.world_size))
    if env.is_chief:
        Path(out).write_text(json.dumps(per_step[1:]))  # per_step[k]: syncs of step k (1-based) onwards
    shutdown_distributed()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
