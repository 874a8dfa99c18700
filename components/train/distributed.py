"""The process group from the torchrun environment, and running a block on every rank together.

The model's sharding (TorchRec's DMP) is in sharding.py; this module imports nothing of the
model or the optimizer, so everything that needs a collective can import it.
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
