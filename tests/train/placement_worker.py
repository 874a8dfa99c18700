"""A rank that shards the tiny model with a stand-in for the GPU and prints where every tensor is.

Usage: python tests/train/placement_worker.py CONFIG (RANK/WORLD_SIZE/MASTER_* from the test).

There is no CUDA here, and on CPU every tensor is on the CPU whatever the code does. So DMP
shards on the CPU as usual, but its data-parallel wrapper is handed the meta device as the
device the dense part must go to: a tensor left behind stays on the CPU and shows up. DDP
cannot run on meta tensors, so at world size 2 torchrec's DDP set-up is replaced by a holder
that only keeps the module it is given, without moving it: the test then shows that the dense
part is on the device without relying on DDP, which a world of one never builds.
"""

from __future__ import annotations

import json
import sys

import torch
from torch import nn

from components.ranker.model import HeavyRanker
from components.train import sharding
from components.train.__main__ import quiet_libraries
from components.train.config import load_train_config
from components.train.distributed import init_distributed, shutdown_distributed

STAND_IN = torch.device("meta")


class HeldModule(nn.Module):
    """Stands in for DistributedDataParallel: holds `module`, as DDP does, and nothing else."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module


class OnStandInDevice(sharding._DataParallelAcrossRanks):
    def wrap(self, dmp, env, device) -> None:
        super().wrap(dmp, env, STAND_IN)

    def _ddp_wrap(self, dmp, env, device, ddp_ignore_param_names) -> None:
        """torchrec's DDP set-up without its own `.to(device)` (which cannot copy to meta):
        the dense part must already be on the device, whatever DDP would have done."""
        dmp._dmp_wrapped_module = HeldModule(dmp._dmp_wrapped_module)


def main(config_path: str) -> int:
    quiet_libraries()
    config = load_train_config(config_path)
    env = init_distributed()
    sharding._DataParallelAcrossRanks = OnStandInDevice
    model = HeavyRanker(config.model, config.load_schema(), sparse_device="meta")
    dmp, _ = sharding.shard_model(model, config.model, config.optimizer, env, config.training.seed)
    tensors = [*dmp.named_parameters(), *dmp.named_buffers()]
    print(json.dumps({"world_size": env.world_size, "devices": {name: str(t.device) for name, t in tensors}}))
    shutdown_distributed()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
