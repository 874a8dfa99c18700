"""Process group from the torchrun environment, and the model sharded by TorchRec's DMP.

The embedding tables get a planner-chosen plan (table-, column- or row-wise, whatever the
device supports) with a fused optimizer; the dense part is data parallel. Tables are
initialized from the seed by global row index, so 1 and N ranks start from the same weights.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torchrec.distributed.model_parallel import DefaultDataParallelWrapper

from components.ranker.model import HeavyRanker, table_name
from components.train.config import ModelConfig, OptimizerConfig
from components.train.optim import embedding_optimizer
from components.train.precision import master_weights

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistEnv:
    rank: int
    world_size: int
    local_rank: int
    local_world_size: int
    device: torch.device
    backend: str

    @property
    def is_chief(self) -> bool:
        return self.rank == 0


def init_distributed(timeout_s: float = 600.0) -> DistEnv:
    """Join the torchrun process group (gloo on CPU, nccl on GPU); a lone process makes its own."""
    use_cuda = torch.cuda.is_available() and os.environ.get("RECAP_FORCE_CPU") != "1"
    backend = "nccl" if use_cuda else "gloo"
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device("cuda", local_rank) if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        timeout = dt.timedelta(seconds=timeout_s)
        if "RANK" in os.environ:
            rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
            dist.init_process_group(backend=backend, store=_attempt_store(rank, world_size, timeout),
                                    rank=rank, world_size=world_size, timeout=timeout)
        else:  # plain `python -m components.train`: a world of one
            dist.init_process_group(backend=backend, store=dist.HashStore(), rank=0, world_size=1, timeout=timeout)
    return DistEnv(
        rank=dist.get_rank(), world_size=dist.get_world_size(), local_rank=local_rank,
        local_world_size=int(os.environ.get("LOCAL_WORLD_SIZE", "1")), device=device, backend=backend,
    )


def _attempt_store(rank: int, world_size: int, timeout: dt.timedelta) -> dist.Store:
    """The rendezvous store under a prefix of its own for each torchrun restart.

    torchrun keeps its agent's store across `--max-restarts` restarts, and the process group
    keys of the failed attempt (the dead ranks' addresses) would otherwise be read again.
    """
    use_agent_store = os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True"
    store = dist.TCPStore(
        os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), world_size,
        is_master=not use_agent_store and rank == 0, timeout=timeout, multi_tenant=True,
    )
    attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    return dist.PrefixStore(f"recap/attempt_{attempt}", store)


def every_rank(value: int) -> list[int]:
    """Every rank's `value`, on every rank: one all_reduce of a world-size vector (also a barrier)."""
    if not (dist.is_initialized() and dist.get_world_size() > 1):
        return [value]
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
    values = torch.zeros(dist.get_world_size(), dtype=torch.int64, device=device)
    values[dist.get_rank()] = value
    dist.all_reduce(values)
    return values.tolist()


@contextlib.contextmanager
def together(what: str, error: type[Exception] = RuntimeError) -> Iterator[None]:
    """Run the block on every rank (its work may be rank-specific, e.g. rank 0's commit marker or
    one rank's upload); an exception in it on any rank is raised on every rank when it ends.

    A rank failing alone would otherwise leave the others waiting in their next collective until
    the process-group timeout. The failing rank raises its own exception, the others `error`.
    """
    failure = None
    try:
        yield
    except Exception as exc:  # raised below, after the other ranks know
        failure = exc
    failed = [rank for rank, flag in enumerate(every_rank(int(failure is not None))) if flag]
    if failure is not None:
        raise failure
    if failed:
        raise error(f"{what}: rank {failed[0]} failed (its error is in its log); stopping every rank")


def shutdown_distributed() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def initial_table_weights(num_embeddings: int, embedding_dim: int, seed: int) -> torch.Tensor:
    """TorchRec's default init, uniform(+-sqrt(1/num_embeddings)), drawn from a per-table seed."""
    generator = torch.Generator().manual_seed(seed)
    bound = (1.0 / num_embeddings) ** 0.5
    return torch.empty(num_embeddings, embedding_dim).uniform_(-bound, bound, generator=generator)


def _sharded_tables(model: nn.Module) -> dict[str, object]:
    return {k: v for k, v in model.state_dict().items() if hasattr(v, "local_shards")}


class _DataParallelAcrossRanks(DefaultDataParallelWrapper):
    """DDP over the dense part, except in a world of one, where it would only copy gradients."""

    def wrap(self, dmp, env, device) -> None:
        if env.world_size > 1:
            super().wrap(dmp, env, device)


def shard_model(model: HeavyRanker, model_config: ModelConfig, optimizer_config: OptimizerConfig,
                env: DistEnv, seed: int) -> tuple[nn.Module, str]:
    """Wrap `model` (embedding tables on the meta device) in DMP; returns (dmp, plan as text)."""
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
    topology = Topology(world_size=env.world_size, compute_device=env.device.type,
                        local_world_size=env.local_world_size)
    planner = EmbeddingShardingPlanner(topology=topology, constraints=constraints)
    plan = planner.collective_plan(model, [sharder], dist.GroupMember.WORLD)
    dmp = DistributedModelParallel(model, device=env.device, plan=plan, sharders=[sharder],
                                   data_parallel_wrapper=_DataParallelAcrossRanks())
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
