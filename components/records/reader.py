"""The training and evaluation data reader: a split manifest in, torch `RecapBatch`es out.

Both record layouts (components.records.layout) are read; the manifest says which one and
how the shards are compressed.

Two paths, the same record order and the same batches:
- uncompressed packed shards (the training layout) are fixed-size frames, read with numpy
  (components.records.frames; gs:// shards in place, block by block: components.records.remote),
  with no TensorFlow in the process;
- everything else goes through tf.data, as in the original: shards interleaved, records
  batched, parsed with `tf.io.parse_example` in parallel, prefetched, the features packed into
  the batch layout inside the TF graph (labels in task order, example weights, IDs flattened
  key-major) so the Python side only wraps buffers as torch tensors.

Shard order, resume arithmetic and shard verification live in `shards`.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from components.common import contract, storage
from components.common.errors import DataError, RecapError
from components.common.logs import Throughput, format_metrics
from components.common.manifest import read_manifest
from components.common.schema import Role, Schema
from components.records.batch import RecapBatch
from components.records.layout import (
    PACKED,
    SEGDENSE,
    ModelReads,
    PackedRecord,
    RecordLayout,
    load_split_manifest,
    manifest_compression,
    tf_feature_spec,
)
from components.records.malloc import reuse_large_allocations
from components.records.shards import (
    GroupRead,
    ShardProvider,
    VerifiedShards,
    group_reads,
    rank_shards,
)
from components.records.threads import cap_tensorflow_threads, dataset_options

log = logging.getLogger(__name__)

LOG_EVERY_S_ENV = "RECAP_READER_LOG_EVERY_S"  # throughput line interval, default 30 s
READ_BUFFER_BYTES = 1 << 20


@dataclass(frozen=True)
class ReaderOptions:
    batch_size: int  # per rank
    shuffle: bool = True  # shard order, reshuffled per epoch from `seed`
    seed: int = 0
    repeat: bool = False
    drop_remainder: bool = False
    skip_corrupt: bool = False  # skip (and count) a bad shard instead of failing
    cache_dir: str | None = None  # where gs:// shards are cached; a temporary directory if None
    num_parallel_reads: int = 4  # shards read round-robin at a time
    prefetch: int = 2  # batches
    # What the model reads (training): only those features are parsed and handed over, and
    # a packed split must hold them. None (evaluation, tools): everything the split has.
    reads: ModelReads | None = None
    check_values: bool = True  # the contract's cheap per-batch checks: labels in {0, 1}, finite embeddings


def count_records(manifest_uri: str) -> int:
    """Records in a split, from its manifest (no shard is opened)."""
    manifest, _ = read_manifest(manifest_uri)
    return manifest.total_records


class _Layout:
    """How the records of a split become a RecapBatch, inside the TF graph.

    segdense: `parse_example` of the float/int64 lists; with `reads` set (training), only
    the model's features are parsed (no discrete, no labels outside the tasks) and the
    continuous and binary values are cut to its truncation. packed: `parse_example` of the
    bytes features, each `decode_raw`d into its tensor (cut too, if it holds more).
    A batch without a discrete group carries an empty [B, 0] one.
    """

    def __init__(self, schema: Schema, stored: RecordLayout, reads: ModelReads | None = None,
                 fixed_offsets: bool = True) -> None:
        self.schema, self.stored = schema, stored
        self.label_specs = [schema.task_label(task) for task in schema.tasks]
        self.embedding_specs = {spec.name: spec for spec in schema.embeddings}
        self.continuous = schema.group(Role.CONTINUOUS).feature
        self.binary = schema.group(Role.BINARY).feature
        self.discrete = schema.group(Role.DISCRETE).feature
        self.embeddings = {spec.name: spec.feature for spec in schema.embeddings}
        self.id_names = [spec.name for spec in schema.ids]
        self.id_features = [spec.feature for spec in schema.ids]
        self.task_features = [schema.task_label(task).feature for task in schema.tasks]
        self.pos_rates = [task.pos_downsampling_rate for task in schema.tasks]
        self.neg_rates = [task.neg_downsampling_rate for task in schema.tasks]
        self.cut = (None, None) if reads is None else (reads.continuous, reads.binary)
        self.with_discrete = stored.kind == SEGDENSE and reads is None
        if stored.kind == SEGDENSE:
            spec = tf_feature_spec(schema)
            if reads is not None:
                keep = {self.continuous, self.binary, *self.embeddings.values(), *self.id_features, *self.task_features}
                spec = {name: value for name, value in spec.items() if name in keep}
            self.spec = spec
        else:
            self.fields = stored.fields(schema)
            self.record = PackedRecord.of(stored, schema)
        # Packed records are read at their fixed byte offsets on little-endian hosts (every
        # x86 and ARM server); elsewhere through parse_example + decode_raw(little_endian).
        self.fixed_offsets = fixed_offsets and sys.byteorder == "little"

    def parse_fn(self):
        import tensorflow as tf

        if self.stored.kind == PACKED:  # parse_example of the bytes features (the TF path only)
            self.spec = {f.feature: tf.io.FixedLenFeature([], tf.string) for f in self.fields}

        pos = tf.constant(self.pos_rates, tf.float32)
        neg = tf.constant(self.neg_rates, tf.float32)
        cut_continuous, cut_binary = self.cut

        def cut(values, n):
            return values if n is None else values[:, :n]

        dtypes = {"<f4": tf.float32, "u1": tf.uint8, "<i8": tf.int64}

        def packed(f):
            parts = {field.part: tf.io.decode_raw(f[field.feature], dtypes[field.dtype], little_endian=True)
                     for field in self.fields}
            labels = tf.cast(parts.pop("labels"), tf.float32)
            return parts, labels

        def packed_at_offsets(serialized):
            # One copy of the whole records, then each payload sliced at its fixed offset and
            # reinterpreted in place (a little-endian host): 2-3x cheaper than parse_example.
            raw = tf.io.decode_raw(serialized, tf.uint8)  # records of unequal size fail here
            raw = tf.ensure_shape(raw, [None, self.record.size])  # and of another size here
            rows, parts = tf.shape(raw)[0], {}
            for field, at, size in self.record.slots:
                piece = raw[:, at : at + size]
                if field.dtype != "u1":
                    width = size // field.length if field.length else 1
                    piece = tf.bitcast(tf.reshape(piece, [rows, field.length, width]), dtypes[field.dtype])
                parts[field.part] = piece
            return parts, tf.cast(parts.pop("labels"), tf.float32)


        def segdense(f):
            parts = {"continuous": f[self.continuous], "binary": f[self.binary],
                     "ids": tf.concat([f[name] for name in self.id_features], axis=1)}
            if self.with_discrete:
                parts["discrete"] = f[self.discrete]
            for name, feature in self.embeddings.items():
                parts[f"embedding/{name}"] = f[feature]
            labels = tf.cast(tf.concat([f[name] for name in self.task_features], axis=1), tf.float32)
            return parts, labels

        def parse(serialized):
            if self.stored.kind == SEGDENSE:
                parts, labels = segdense(tf.io.parse_example(serialized, self.spec))
            elif self.fixed_offsets:
                parts, labels = packed_at_offsets(serialized)
            else:
                parts, labels = packed(tf.io.parse_example(serialized, self.spec))
            out = {
                "continuous": cut(parts.pop("continuous"), cut_continuous),
                "binary": tf.cast(cut(parts.pop("binary"), cut_binary), tf.float32),
                "ids": tf.reshape(tf.transpose(parts.pop("ids")), [-1]),  # key-major, as a KJT wants
                "labels": labels,
                "weights": labels / pos + (1.0 - labels) / neg,
            }
            out.update(parts)  # embeddings (and discrete)
            return out

        return parse

    def reads_frames(self, compression: str) -> bool:
        """Uncompressed packed shards on a little-endian host are read as numpy frames, without TensorFlow."""
        return self.stored.kind == PACKED and not compression and self.fixed_offsets

    def batch_of(self, parts: dict[str, Any]) -> RecapBatch:
        """A RecapBatch from the frame reader's numpy parts (what `parse_fn` computes in the TF graph)."""
        import numpy as np

        labels = parts["labels"].astype(np.float32)
        rows = len(labels)
        pos, neg = np.asarray(self.pos_rates, np.float32), np.asarray(self.neg_rates, np.float32)
        return RecapBatch(
            continuous=torch.from_numpy(parts["continuous"]),
            binary=torch.from_numpy(parts["binary"].astype(np.float32)),
            discrete=torch.empty((rows, 0), dtype=torch.int64),
            embeddings={name: torch.from_numpy(parts[f"embedding/{name}"]) for name in self.embeddings},
            sparse_features=KeyedJaggedTensor(
                keys=self.id_names, values=torch.from_numpy(np.ascontiguousarray(parts["ids"].T).reshape(-1)),
                lengths=torch.ones(rows * len(self.id_names), dtype=torch.int32)),
            labels=torch.from_numpy(labels),
            weights=torch.from_numpy(labels / pos + (1.0 - labels) / neg),
        )

    def to_batch(self, parsed: dict[str, Any]) -> RecapBatch:
        from tensorflow.experimental import dlpack

        def tensor(key: str) -> torch.Tensor:
            # DLPack shares TF's buffer; `.numpy()` would copy every batch once more.
            return torch.from_dlpack(dlpack.to_dlpack(parsed[key]))

        labels = tensor("labels")
        rows = labels.shape[0]
        sparse = KeyedJaggedTensor(
            keys=self.id_names,
            values=tensor("ids"),
            lengths=torch.ones(rows * len(self.id_names), dtype=torch.int32),
        )
        discrete = tensor("discrete") if "discrete" in parsed else torch.empty((rows, 0), dtype=torch.int64)
        return RecapBatch(
            continuous=tensor("continuous"),
            binary=tensor("binary"),
            discrete=discrete,
            embeddings={name: tensor(f"embedding/{name}") for name in self.embeddings},
            sparse_features=sparse,
            labels=labels,
            weights=tensor("weights"),
        )


def _dataset(provider: ShardProvider, layout: _Layout, options: ReaderOptions, compression: str = "GZIP"):
    import tensorflow as tf

    threads = cap_tensorflow_threads()
    cycle = max(1, options.num_parallel_reads)

    def read_group(paths, offsets):
        files = tf.data.Dataset.from_tensor_slices((paths, offsets))
        return files.interleave(
            lambda path, offset: tf.data.TFRecordDataset(
                path, compression_type=compression, buffer_size=READ_BUFFER_BYTES).skip(offset),
            # Sequential round robin: a parallel interleave's hand-offs cost more CPU per record
            # than reading it; the parse map below runs in parallel.
            cycle_length=cycle, block_length=1,
        )

    groups = tf.data.Dataset.from_generator(
        provider.groups,
        output_signature=(tf.TensorSpec([None], tf.string), tf.TensorSpec([None], tf.int64)),
    )
    records = groups.flat_map(read_group)
    batches = records.batch(options.batch_size, drop_remainder=options.drop_remainder)
    parsed = batches.map(layout.parse_fn(), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return parsed.prefetch(max(1, options.prefetch)).with_options(dataset_options(threads))


def read_batches(manifest_uri: str, schema: Schema, options: ReaderOptions, rank: int = 0,
                 world_size: int = 1, start_batch: int = 0,
                 verified: VerifiedShards | None = None) -> Iterator[RecapBatch]:
    """Batches of this rank's shards (r::W), resuming after `start_batch` batches.

    A shard that is missing or differs from the manifest (size, sha256) fails the read with
    its URI in the message, or is skipped with a counted warning when `skip_corrupt`.
    `verified` carries the checked shards (and gs:// downloads) from one read to the next.
    """
    if options.batch_size < 1:
        raise DataError(f"batch_size must be >= 1, got {options.batch_size}")
    manifest, directory, layout = load_split_manifest(manifest_uri, schema, options.reads)
    shards = rank_shards(manifest, directory, rank, world_size)
    if options.repeat and not any(shard.records for shard in shards):
        raise DataError(f"{directory}: repeat=True but rank {rank}'s {len(shards)} shards hold no records")
    reads = group_reads(shards, options.num_parallel_reads, options.shuffle, options.seed, rank,
                        options.repeat, start_batch * options.batch_size)
    return _iterate(reads, _Layout(schema, layout, options.reads), options, rank, start_batch, verified,
                    manifest_compression(manifest.extra))


def _iterate(reads: Iterator[GroupRead], layout: _Layout, options: ReaderOptions, rank: int,
             start_batch: int, verified: VerifiedShards | None = None,
             compression: str = "GZIP") -> Iterator[RecapBatch]:
    frames = layout.reads_frames(compression)
    # skip_corrupt drops a bad shard before any of it is used: only a whole-shard download can
    provider = ShardProvider(reads, options.skip_corrupt, options.cache_dir, verified,
                             stream_gcs=frames and not options.skip_corrupt)
    if frames:
        located = _frame_path(provider, layout, options)
    else:
        located = _tensorflow_path(provider, layout, options, compression)
    throughput = Throughput()
    last_log, log_every_s = throughput.start, float(os.environ.get(LOG_EVERY_S_ENV, "30"))
    batches = 0
    try:
        for batch, locate in located:
            if options.check_values:
                check_batch(batch, layout, locate)
            batches += 1
            throughput.add(batch.batch_size)
            now = time.perf_counter()
            if now - last_log >= log_every_s:
                last_log = now
                log.info("reader %s", format_metrics(rank=rank, batch=start_batch + batches,
                                                     rows=throughput.count, rows_per_s=throughput.per_second))
            yield batch
    finally:
        located.close()
        provider.close()
        log.info("reader done %s", format_metrics(
            rank=rank, batches=batches, rows=throughput.count, rows_per_s=throughput.per_second,
            skipped_shards=len(provider.skipped)))


Locate = Callable[[int, list[int]], "tuple[str, int] | None"]  # (row, its IDs) -> (shard URI, record)


def tf_elements(dataset: Any, error: Callable[[Any], Exception]) -> Iterator[Any]:
    """A tf.data dataset's elements; TensorFlow's OpError becomes `error(exc)`, raised without its chain."""
    import tensorflow as tf

    iterator = iter(dataset)
    while True:
        try:
            element = next(iterator)
        except StopIteration:
            return
        except tf.errors.OpError as exc:
            raise error(exc) from None
        yield element


def _tensorflow_path(provider: ShardProvider, layout: _Layout, options: ReaderOptions,
                     compression: str) -> Iterator[tuple[RecapBatch, Locate]]:
    def locate(row: int, ids: list[int]) -> tuple[str, int] | None:
        return _locate(provider, layout, ids, compression)

    first = True
    for parsed in tf_elements(_dataset(provider, layout, options, compression),
                              lambda exc: _read_error(provider, exc, compression)):
        if first:
            reuse_large_allocations()  # TensorFlow's generator dataset just reset them
            first = False
        yield layout.to_batch(parsed), locate


def _frame_path(provider: ShardProvider, layout: _Layout, options: ReaderOptions
                ) -> Iterator[tuple[RecapBatch, Locate]]:
    """Uncompressed packed shards through components.records.frames: numpy, no TensorFlow; gs://
    shards with block hashes read in place (components.records.remote)."""
    from concurrent.futures import ThreadPoolExecutor

    from components.records.frames import FrameLayout, frame_batches, open_local, prefetched
    from components.records.remote import BlockStream
    from components.records.shards import FETCHERS

    reuse_large_allocations()  # batch-sized arrays come back every batch: keep them mapped
    pool = ThreadPoolExecutor(max_workers=FETCHERS, thread_name_prefix="block-fetch")

    def opener(path: str, uri: str, start: int) -> tuple[Any, int]:
        if storage.is_gcs(path):
            entry = provider.entries[uri]
            return BlockStream(uri, entry, start, pool), entry.bytes
        return open_local(path, uri, start)

    def groups():
        for paths, offsets in provider.groups():
            yield list(zip([p.decode() for p in paths], provider.current, strict=True)), offsets

    cut_continuous, cut_binary = layout.cut
    keep = {k: v for k, v in (("continuous", cut_continuous), ("binary", cut_binary)) if v is not None}
    frames = frame_batches(groups(), FrameLayout(layout.record, keep), options.batch_size, options.drop_remainder,
                           opener)
    source = prefetched(frames, options.prefetch)
    try:
        for batch in source:
            yield layout.batch_of(batch.parts), lambda row, ids, batch=batch: batch.where(row)
    finally:
        source.close()
        pool.shutdown(wait=True, cancel_futures=True)


@dataclass(frozen=True)
class BatchBreach:
    """The first breach of the per-batch checks in a batch: the rule's finding, its row and IDs."""

    spec: Any  # the column's contract spec (column, feature)
    breach: contract.Breach
    row: int
    ids: list[int]  # the row's ID features, which find it again in a shard

    def describe(self) -> str:
        return contract.describe_breach(self.spec, self.breach)


def batch_breach(batch: RecapBatch, layout: _Layout) -> BatchBreach | None:
    """The contract's cheap per-batch checks (contract.per_batch_breach) with the offending row's IDs.
    None when the batch passes."""
    # numpy, not torch: torch's parallel ops would wake the trainer's threads
    labels = batch.labels.numpy()
    found = contract.per_batch_breach(
        [(spec, labels[:, index]) for index, spec in enumerate(layout.label_specs)],
        [(spec, batch.embeddings[name].numpy()) for name, spec in layout.embedding_specs.items()])
    if found is None:
        return None
    spec, breach = found
    row = int(breach.rows[0])
    ids = batch.sparse_features.values().view(len(layout.id_features), -1)[:, row].tolist()
    return BatchBreach(spec, breach, row, ids)


def check_batch(batch: RecapBatch, layout: _Layout, locate: Locate) -> None:
    """`batch_breach` as a DataError naming the shard, the record in it and the column."""
    breach = batch_breach(batch, layout)
    if breach is not None:
        found = locate(breach.row, breach.ids)
        where = f"{found[0]}: record {found[1]}" if found else f"one of the shards read (row with IDs {breach.ids})"
        raise DataError(f"{where}: {breach.describe()}")


def _locate(provider: ShardProvider, layout: _Layout, ids: list[int], compression: str) -> tuple[str, int] | None:
    """(shard URI, record number) of the row with these IDs among the shards read lately.

    Rows carry no shard tag through tf.data (tagging each record cost ~40% of read throughput),
    so only this failure path reads the recent shards again to find the row.
    """
    import numpy as np
    import tensorflow as tf

    if layout.stored.kind == PACKED:
        ids_field = next(f for f in layout.fields if f.part == "ids")
        spec = {ids_field.feature: tf.io.FixedLenFeature([], tf.string)}

        def id_rows(parsed):
            raw = tf.io.decode_raw(parsed[ids_field.feature], tf.int64, little_endian=True)
            return raw.numpy().reshape(-1, len(layout.id_features))
    else:
        spec = {feature: layout.spec[feature] for feature in layout.id_features}

        def id_rows(parsed):
            return np.concatenate([parsed[f].numpy().reshape(-1, 1) for f in layout.id_features], axis=1)

    wanted = np.asarray(ids, dtype=np.int64)
    for path, uri in provider.recent():
        position = 0
        for chunk in tf.data.TFRecordDataset(path, compression_type=compression).batch(4096):
            stacked = id_rows(tf.io.parse_example(chunk, spec))
            hit = np.flatnonzero((stacked == wanted).all(axis=1))
            if len(hit):
                return uri, position + int(hit[0])
            position += len(stacked)
    return None


def _read_error(provider: ShardProvider, exc: Any, compression: str) -> RecapError:
    """The provider's own error (it names the shard), else the damaged shard of the group being read.

    TF reads a group's shards in parallel and its error does not say which one failed; the shards
    are read again one at a time (only on this failure path) to name it.
    """
    if isinstance(provider.error, RecapError):
        return provider.error
    damaged = provider.find_unreadable(compression)
    if damaged is not None:
        uri, message = damaged
        return DataError(f"{uri}: cannot read TFRecord shard: {message}")
    shards = ", ".join(provider.current) or "<no shard opened yet>"
    return DataError(f"{shards}: cannot read TFRecord shard: {exc.message}")
