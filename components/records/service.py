"""Training batches through the tf.data service: dataset workers read and parse, ranks only consume.

The same records, batch size and parse graph as the in-process reader (`reader`), but the
pipeline runs on the service's CPU-only dataset workers; a rank receives finished, parsed
batches over gRPC and only wraps them as torch tensors, which is what keeps a GPU node's few
CPUs free for training.

Processing mode: `distributed_epoch`. The dispatcher hands the split's shards out one at a
time to the workers, and every batch a worker makes goes to exactly one consumer of the job.
All ranks consume from one job, so a global step is W distinct per-rank batches and one epoch
of the service covers every record once, as the in-process reader's r::W shard split does.
What differs from the in-process reader, and is stated in docs/data-service.md:
- the order of records and which rank gets which batch are not deterministic (workers race);
  the multiset of records in an epoch is the same;
- a batch mixes records of the shards one worker reads at a time, not the r::W shards of a rank;
- a worker that dies loses the batches it had made but not delivered (at most once);
- resume: a restarted trainer opens a new job that starts over at the beginning of the epoch
  the checkpoint fell in (shard order of that epoch from the seed); records of that epoch read
  before the checkpoint are read again. The in-process reader resumes at the exact record.

Shards are read by the workers through TensorFlow's own file systems (local paths, gs://), so
they must reach the split's URIs; the manifest's sha256 check of the in-process reader is not
repeated on the workers (a shard that is missing or truncated fails the read with TF's error).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

from components.common import storage
from components.common.errors import DataError
from components.common.schema import Schema
from components.records.batch import RecapBatch
from components.records.layout import RecordLayout, manifest_compression
from components.records.reader import (
    READ_BUFFER_BYTES,
    ReaderOptions,
    _Layout,
    batch_breach,
    load_split_manifest,
    tf_elements,
)

log = logging.getLogger(__name__)

PROCESSING_MODE = "distributed_epoch"
GRPC = "grpc://"


class DataServiceUnreachable(DataError):
    """The dispatcher did not answer within the connect timeout; names its address."""


@dataclass(frozen=True)
class ServiceJob:
    """What rank 0 registers and every rank consumes: the dataset's id and the shared job."""

    dispatcher: str  # grpc://host:port
    dataset_id: str
    job_name: str


def dispatcher_host_port(address: str) -> tuple[str, int]:
    """`grpc://host:port` (or `host:port`) -> (host, port); anything else is a DataError naming it."""
    rest = address[len(GRPC):] if address.startswith(GRPC) else address
    host, sep, port = rest.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise DataError(f"data service dispatcher {address!r}: expected grpc://host:port")
    return host, int(port)


def wait_for_dispatcher(address: str, timeout_s: float) -> None:
    """Poll until the dispatcher's port accepts a connection; DataServiceUnreachable after `timeout_s`.

    TensorFlow's client retries an unreachable dispatcher for a very long time without a word;
    this check turns that into one error naming the address.
    """
    host, port = dispatcher_host_port(address)
    deadline = time.monotonic() + timeout_s
    last: OSError | None = None
    while True:
        try:
            with socket.create_connection((host, port), timeout=min(5.0, max(timeout_s, 0.1))):
                return
        except OSError as exc:
            last = exc
        if time.monotonic() >= deadline:
            raise DataServiceUnreachable(
                f"data service dispatcher {address}: not reachable within {timeout_s:.0f}s ({last})")
        time.sleep(0.2)


@dataclass(frozen=True)
class _Split:
    uris: list[str]
    records: int
    layout: RecordLayout  # how the shards are laid out (segdense or packed)
    compression: str  # TFRecord compression_type of the shards


def _split(manifest_uri: str, schema: Schema, options: ReaderOptions) -> _Split:
    manifest, directory, layout = load_split_manifest(manifest_uri, schema, options.reads)
    uris = [storage.join(directory, f.path) for f in manifest.files if f.records]
    # The workers run elsewhere: a relative local path would be read from their directory.
    uris = [u if storage.is_gcs(u) else os.path.abspath(u) for u in uris]
    if not uris:
        raise DataError(f"{directory}: the split holds no records")
    return _Split(uris, manifest.total_records, layout, manifest_compression(manifest.extra))


def service_dataset(manifest_uri: str, schema: Schema, options: ReaderOptions, global_batch_size: int,
                    start_batch: int = 0):
    """The tf.data pipeline the workers run: shard URIs in, parsed per-rank batches out.

    `start_batch` (per-rank batches already consumed by every rank) picks the epoch to start
    at; the file order of each epoch comes from (seed, epoch).
    """
    import tensorflow as tf

    if options.batch_size < 1:
        raise DataError(f"batch_size must be >= 1, got {options.batch_size}")
    split = _split(manifest_uri, schema, options)
    epoch = start_batch * global_batch_size // split.records
    files = tf.data.Dataset.from_tensor_slices(split.uris)
    if epoch and not options.repeat:
        files = files.take(0)
    if options.shuffle:
        files = files.shuffle(len(split.uris), seed=options.seed * 1_000_003 + epoch, reshuffle_each_iteration=True)
    if options.repeat:
        files = files.repeat()
    cycle = max(1, options.num_parallel_reads)
    records = files.interleave(
        lambda path: tf.data.TFRecordDataset(path, compression_type=split.compression, buffer_size=READ_BUFFER_BYTES),
        cycle_length=cycle, block_length=1, num_parallel_calls=cycle, deterministic=True)
    batches = records.batch(options.batch_size, drop_remainder=options.drop_remainder)
    parsed = batches.map(_Layout(schema, split.layout, options.reads).parse_fn(), num_parallel_calls=tf.data.AUTOTUNE, deterministic=False)
    return parsed.prefetch(max(1, options.prefetch))


def register(dispatcher: str, dataset, start_batch: int, connect_timeout_s: float) -> ServiceJob:
    """Register `dataset` with the dispatcher (rank 0 does this once) and name the shared job.

    The job name is new for every start of the trainer, so a resumed run never joins a job a
    previous attempt left half-read (the dispatcher drops abandoned jobs by itself).
    """
    import tensorflow as tf

    log.info("data service: waiting up to %.0fs for the dispatcher %s", connect_timeout_s, dispatcher)
    wait_for_dispatcher(dispatcher, connect_timeout_s)
    result: dict[str, object] = {}

    def call() -> None:
        try:
            # No compression: decompressing on the trainer would spend the CPU the service saves.
            result["id"] = tf.data.experimental.service.register_dataset(dispatcher, dataset, compression=None)
        except Exception as exc:  # reported below, in the caller's thread
            result["error"] = exc

    thread = threading.Thread(target=call, name="data-service-register", daemon=True)
    thread.start()
    thread.join(connect_timeout_s)
    if thread.is_alive():
        raise DataServiceUnreachable(
            f"data service dispatcher {dispatcher}: port open but dataset registration got no answer "
            f"within {connect_timeout_s:.0f}s (is it a tf.data dispatcher?)")
    if "error" in result:
        raise DataError(f"data service dispatcher {dispatcher}: cannot register the dataset: {result['error']}")
    dataset_id = result["id"]
    dataset_id = dataset_id.numpy().decode() if hasattr(dataset_id, "numpy") else str(dataset_id)
    return ServiceJob(dispatcher, dataset_id, f"recap-{uuid.uuid4().hex[:12]}-from-{start_batch}")


def consume(job: ServiceJob, element_spec, schema: Schema, check_values: bool = True) -> Iterator[RecapBatch]:
    """This rank's batches of the shared job, as RecapBatches (the same type the reader yields).

    `check_values`: the reader's per-batch contract checks, here on the consumer. A batch from the
    service carries no shard name, so a breach names the batch (`tf.data service batch N`, counted
    from 1 on this rank), the row and its IDs; it is the same DataError (exit code) as the reader's.
    """
    import tensorflow as tf

    dataset = tf.data.experimental.service.from_dataset_id(
        PROCESSING_MODE, job.dispatcher, job.dataset_id, element_spec=element_spec, job_name=job.job_name,
        max_outstanding_requests=2)
    layout = _Layout(schema, RecordLayout())  # to_batch only: the workers parsed the records
    elements = tf_elements(dataset.prefetch(1), lambda exc: DataError(
        f"data service dispatcher {job.dispatcher}, job {job.job_name}: {exc.message}"))
    for number, parsed in enumerate(elements, start=1):
        batch = layout.to_batch(parsed)
        if check_values and (breach := batch_breach(batch, layout)) is not None:
            raise DataError(f"tf.data service batch {number} (job {job.job_name}): row {breach.row} "
                            f"(IDs {breach.ids}): {breach.describe()}")
        yield batch
