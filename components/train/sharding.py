"""The model sharded by TorchRec's DistributedModelParallel (DMP).

The embedding tables get a planner-chosen plan (table-, column- or row-wise, whatever the
device supports) with a fused optimizer; the dense part is data parallel. Tables are
initialized from the seed by global row index, so 1 and N ranks start from the same weights.
"""

from __future__ import annotations

import contextlib

import torch
import torch.distributed as dist
from torch import nn
from torchrec.distributed.model_parallel import DefaultDataParallelWrapper

from components.ranker.config import ModelConfig
from components.ranker.model import HeavyRanker, table_name
from components.train.config import OptimizerConfig
from components.train.distributed import DistEnv
from components.train.optim import embedding_optimizer
from components.train.precision import master_weights


def initial_table_weights(num_embeddings: int, embedding_dim: int, seed: int) -> torch.Tensor:
    """TorchRec's default init, uniform(+-sqrt(1/num_embeddings)), drawn from a per-table seed."""
    generator = torch.Generator().manual_seed(seed)
    bound = (1.0 / num_embeddings) ** 0.5
    return torch.empty(num_embeddings, embedding_dim).uniform_(-bound, bound, generator=generator)


def _sharded_tables(model: nn.Module) -> dict[str, object]:
    return {k: v for k, v in model.state_dict().items() if hasattr(v, "local_shards")}


class _DataParallelAcrossRanks(DefaultDataParallelWrapper):
    """The dense part on DMP's device at every world size; DDP over it only on several ranks.

    torchrec moves the unsharded layers to the device inside its DDP wrap and nowhere else, so
    a world of one, which skips DDP (it would only copy gradients), must move them itself: on a
    single GPU the batch would meet CPU weights in the first forward pass.
    """

    def wrap(self, dmp, env, device) -> None:
        move_unsharded(dmp._dmp_wrapped_module, device)
        if env.world_size > 1:
            super().wrap(dmp, env, device)


def gradient_sync_skipped(dmp: nn.Module):
    """Context in which DDP skips its gradient all-reduce (`no_sync`): the micro-batches before the
    last of a gradient-accumulation step, whose gradients the last one's all-reduce carries along.
    A no-op at a world of one (no DDP). The embedding tables' fused optimizer is not affected: it
    still updates the tables in every micro-batch's backward pass."""
    from torch.nn.parallel import DistributedDataParallel

    wrapped = getattr(dmp, "_dmp_wrapped_module", None)
    return wrapped.no_sync() if isinstance(wrapped, DistributedDataParallel) else contextlib.nullcontext()


def move_unsharded(module: nn.Module, device: torch.device) -> None:
    """Every parameter and buffer outside DMP's sharded modules to `device` (DMP placed those)."""
    from torchrec.distributed.types import ShardedModule

    if not any(isinstance(m, ShardedModule) for m in module.modules()):
        module.to(device)
        return
    module._apply(lambda t: t.to(device), recurse=False)  # its own tensors, e.g. the model's buffers
    for child in module.children():
        if not isinstance(child, ShardedModule):
            move_unsharded(child, device)


def shard_model(model: HeavyRanker, model_config: ModelConfig, optimizer_config: OptimizerConfig,
                env: DistEnv, seed: int, batch_size: int | None = None,
                static_graph: bool = True) -> tuple[nn.Module, str]:
    """Wrap `model` (embedding tables on the meta device) in DMP; returns (dmp, plan as text).

    The planner is told the per-rank batch and, on a GPU, its real memory (it otherwise assumes
    512 rows and 32 GB). `static_graph` is DDP's (torchrec's default); gradient accumulation
    turns it off: a static-graph DDP must all-reduce in its first backward pass, and the first
    micro-batch of an accumulation step skips it (`gradient_sync_skipped`).
    """
    from torchrec.distributed import DistributedModelParallel
    from torchrec.distributed.embedding_types import EmbeddingComputeKernel
    from torchrec.distributed.embeddingbag import EmbeddingBagCollectionSharder
    from torchrec.distributed.planner import (
        EmbeddingShardingPlanner,
        ParameterConstraints,
        Topology,
    )
    from torchrec.optim.apply_optimizer_in_backward import apply_optimizer_in_backward

    sharder = EmbeddingBagCollectionSharder()
    if model.sparse is not None:
        optimizer_class, kwargs = embedding_optimizer(optimizer_config.embedding, env.device)
        apply_optimizer_in_backward(optimizer_class, model.sparse.embedding_bags.parameters(), kwargs)
    supported = set(sharder.sharding_types(env.device.type))
    allowed = [s for s in model_config.sparse.sharding_types if s in supported]
    if not allowed and model.sparse is not None:
        raise ValueError(f"model.sparse.sharding_types: none of {model_config.sparse.sharding_types} "
                         f"is supported on {env.device.type} (supported: {sorted(supported)})")
    constraints = {
        table_name(t.feature): ParameterConstraints(
            sharding_types=allowed, compute_kernels=[EmbeddingComputeKernel.FUSED.value])
        for t in model_config.sparse.tables
    }
    hbm = torch.cuda.get_device_properties(env.device).total_memory if env.device.type == "cuda" else None
    topology = Topology(world_size=env.world_size, compute_device=env.device.type,
                        local_world_size=env.local_world_size, hbm_cap=hbm)
    planner = EmbeddingShardingPlanner(topology=topology, constraints=constraints, batch_size=batch_size)
    plan = planner.collective_plan(model, [sharder], dist.GroupMember.WORLD)
    dmp = DistributedModelParallel(model, device=env.device, plan=plan, sharders=[sharder],
                                   data_parallel_wrapper=_DataParallelAcrossRanks(static_graph=static_graph))
    _initialize_tables(dmp, model_config, seed)
    return dmp, str(plan)


@torch.no_grad()
def _initialize_tables(dmp: nn.Module, model_config: ModelConfig, seed: int) -> None:
    """Overwrite each local shard with its slice of the seeded full table."""
    tables = _sharded_tables(dmp)
    for index, table in enumerate(model_config.sparse.tables):
        key = next(k for k in tables if k.endswith(f".{table_name(table.feature)}.weight"))
        full = initial_table_weights(table.num_embeddings, table.embedding_dim, seed * 1000 + index)
        for shard in tables[key].local_shards():
            (row, col), (rows, cols) = shard.metadata.shard_offsets, shard.metadata.shard_sizes
            shard.tensor.copy_(full[row : row + rows, col : col + cols])


def dense_named_parameters(dmp: nn.Module) -> dict[str, nn.Parameter]:
    """Parameters the dense optimizer updates: everything but the embedding tables.

    fp32 master weights of bf16 copies (precision.py) do not require grad but are updated.
    """
    masters = master_weights(dmp)
    return {name: p for name, p in dmp.named_parameters()
            if (p.requires_grad or id(p) in masters) and ".embedding_bags." not in name}
