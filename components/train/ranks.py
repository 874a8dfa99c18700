"""Every rank together: batches fetched in step, rank 0's work shared, failures raised everywhere.

A rank that fails alone (its reader breaks, its data ends, rank 0's export or listing fails)
would otherwise leave the other ranks blocked in their next collective until the process-group
timeout, 600 s later, with no message. Each helper here costs one small collective.
"""

from __future__ import annotations

import collections
import datetime as dt
from collections.abc import Callable, Iterator

import torch
import torch.distributed as dist

from components.common import errors
from components.common.errors import DataError
from components.common.schema import Schema
from components.records.batch import RecapBatch
from components.train.config import RecapConfig
from components.train.distributed import DistEnv, every_rank, together
from components.train.synthetic import BatchSource


def open_source(source: BatchSource, start: int, what: str) -> Iterator[RecapBatch]:
    """`source(start)` on every rank, or an error on every rank (a reader can fail on one rank)."""
    with together(f"{what}: opening the data", DataError):
        batches = source(start)
    return batches


def next_batches(iterator: Iterator[RecapBatch], count: int, what: str, position: int,
                 limit: str = "training.num_train_steps") -> list[RecapBatch]:
    """The next `count` batches on every rank, or the same error on every rank.

    A rank whose data ends (repeat: false) or whose read fails would otherwise raise alone,
    while the others block in the step's first collective until the process-group timeout.
    One all_reduce of a world_size vector per call (each rank's batch count, -1 after a read
    error) lets all ranks stop together, at the same batch position.
    """
    batches: list[RecapBatch] = []
    failure: Exception | None = None
    try:
        for _ in range(count):
            batches.append(next(iterator))
    except StopIteration:
        pass
    except Exception as exc:  # re-raised below, after the other ranks know
        failure = exc
    got = every_rank(-1 if failure is not None else len(batches))
    if failure is not None:
        raise failure
    failed = [rank for rank, n in enumerate(got) if n < 0]
    if failed:
        raise DataError(f"{what}: rank {failed[0]} failed to read per-rank batch {position} "
                        f"(its error is in its log); stopping every rank")
    short = [(rank, n) for rank, n in enumerate(got) if n < count]
    if short:
        ranks = ", ".join(f"rank {rank} after {position + n}" for rank, n in short)
        raise DataError(f"{what}: ran out of batches ({ranks} per-rank batches); set repeat: true or lower {limit}")
    return batches


class CheckedBatches:
    """Each step's batches, with the every-rank check of `next_batches` made once per `every` steps.

    A per-step collective (and the host sync that reads its result) would keep the host from
    running ahead of a GPU. Instead, every `every` steps each rank reads the next `every` steps'
    batches ahead, and one all_reduce tells every rank how far every rank's data goes: all ranks
    then train exactly those steps and stop together at the same batch position, with the same
    errors as `next_batches` (a failing rank raises its own, the others name it). The read-ahead
    never goes past `remaining` steps, so data that suffices for the run is never reported short.
    """

    def __init__(self, iterator: Iterator[RecapBatch], per_step: int, every: int, what: str, position: int,
                 limit: str = "training.num_train_steps") -> None:
        self.iterator, self.per_step, self.every = iterator, per_step, every
        self.what, self.position, self.limit = what, position, limit
        self.ready: collections.deque[list[RecapBatch]] = collections.deque()
        self.stop: Exception | None = None  # raised when a step past the readable ones is asked for

    def next(self, remaining: int) -> list[RecapBatch]:
        """The next step's batches; `remaining` steps are left in the run (bounds the read-ahead)."""
        if not self.ready:
            if self.stop is not None:
                raise self.stop
            self._read_ahead(max(1, min(self.every, remaining)))
            if not self.ready:
                raise self.stop
        return self.ready.popleft()

    def _read_ahead(self, steps: int) -> None:
        batches: list[RecapBatch] = []
        failure: Exception | None = None
        try:
            for _ in range(steps * self.per_step):
                batches.append(next(self.iterator))
        except StopIteration:
            pass
        except Exception as exc:  # raised once the steps before it are trained, on every rank
            failure = exc
        got = every_rank(-(len(batches) + 1) if failure is not None else len(batches))
        counts = [-n - 1 if n < 0 else n for n in got]
        usable = min(counts) // self.per_step
        for step in range(usable):
            self.ready.append(batches[step * self.per_step : (step + 1) * self.per_step])
        start, self.position = self.position, self.position + usable * self.per_step
        failed = [rank for rank, n in enumerate(got) if n < 0]
        short = [(rank, n) for rank, n in enumerate(got) if 0 <= n < steps * self.per_step]
        if failure is not None:
            self.stop = failure
        elif failed:
            self.stop = DataError(f"{self.what}: rank {failed[0]} failed to read per-rank batch "
                                  f"{start + counts[failed[0]]} (its error is in its log); stopping every rank")
        elif short:
            ranks = ", ".join(f"rank {rank} after {start + n}" for rank, n in short)
            self.stop = DataError(f"{self.what}: ran out of batches ({ranks} per-rank batches); "
                                  f"set repeat: true or lower {self.limit}")


EXPORT_WAIT_S = 24 * 3600.0


def export_wait_group(env: DistEnv) -> dist.ProcessGroup | None:
    """The gloo group `export_on_chief` waits in, made at start-up (a collective call) so a
    network problem of gloo shows now, not after days of training."""
    if env.world_size == 1:
        return None
    return dist.new_group(backend="gloo", timeout=dt.timedelta(seconds=EXPORT_WAIT_S))


def export_on_chief(config: RecapConfig, schema: Schema, env: DistEnv, final_dir: str, step: int,
                     group: dist.ProcessGroup | None) -> str | None:
    """Rank 0 exports the model; the others wait for its outcome, then all return or all fail.

    The wait is a broadcast over a gloo group of its own with a 24 h timeout, not a barrier on
    the training group: a large export to gs:// can outlast that group's 600 s timeout, which
    would kill healthy ranks. (A store `wait` would do too, but needs the default store, a
    private API; gloo comes with every torch build, idles on CPU, and next to nccl needs no
    device.) A failed export is raised on every rank; a rank 0 that dies closes its
    connections, which ends the others' wait at once.
    """
    from components.train.export import export_model

    def export() -> str:
        return export_model(config, schema, final_dir, step)

    if env.world_size == 1:
        return export()
    try:
        model_dir = on_chief(export, "export the model", env, group, torch.device("cpu"))
    finally:
        dist.destroy_process_group(group)
    return model_dir if env.is_chief else None


def on_chief(fn: Callable[[], object], what: str, env: DistEnv, group: dist.ProcessGroup | None = None,
              device: torch.device | None = None):
    """`fn()` run on rank 0 only; its result is broadcast to every rank, or its error raised on every rank."""
    outcome, failure = None, None
    if env.is_chief:
        try:
            outcome = ("ok", fn())
        except Exception as exc:  # re-raised below, after the other ranks know
            failure = exc
            # The nearest error class the other ranks know (a subclass defined elsewhere, such as
            # DataServiceUnreachable, arrives as its DataError base): same message, same exit code.
            known = next((k.__name__ for k in type(exc).__mro__ if getattr(errors, k.__name__, None) is k),
                         type(exc).__name__)
            outcome = ("error", known, str(exc))
    if env.world_size > 1:
        box = [outcome]
        dist.broadcast_object_list(box, src=0, group=group, device=device or env.device)
        outcome = box[0]
    if failure is not None:
        raise failure
    if outcome[0] == "error":
        kind = getattr(errors, outcome[1], None)
        kind = kind if isinstance(kind, type) and issubclass(kind, errors.RecapError) else RuntimeError
        raise kind(f"rank 0 failed to {what}: {outcome[2]}")
    return outcome[1]
