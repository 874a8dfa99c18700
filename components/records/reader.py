"""The training and evaluation data reader: a split manifest in, torch `RecapBatch`es out.

Both record layouts (components.records.layout) are read; the manifest says which one and
how the shards are compressed.

tf.data does the heavy lifting, as in the original: shards interleaved, records batched,
parsed with `tf.io.parse_example` in parallel, prefetched. The features are packed into
the batch layout inside the TF graph (labels in task order, example weights, IDs flattened
key-major) so the Python side only wraps buffers as torch tensors.

Shard order, resume arithmetic and shard verification live in `shards`.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from components.common import contract
from components.common.errors import DataError, RecapError
from components.common.logs import Throughput, format_metrics
from components.common.manifest import read_manifest
from components.common.schema import Role, Schema
from components.records.batch import RecapBatch
from components.records.layout import (
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
            import tensorflow as tf

            self.fields = stored.fields(schema)
            self.spec = {f.feature: tf.io.FixedLenFeature([], tf.string) for f in self.fields}
            self.record = PackedRecord.of(stored, schema)
        # Packed records are read at their fixed byte offsets on little-endian hosts (every
        # x86 and ARM server); elsewhere through parse_example + decode_raw(little_endian).
        self.fixed_offsets = fixed_offsets and sys.byteorder == "little"

    def parse_fn(self):
        import tensorflow as tf

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
    import tensorflow as tf

    provider = ShardProvider(reads, options.skip_corrupt, options.cache_dir, verified)
    throughput = Throughput()
    last_log, log_every_s = throughput.start, float(os.environ.get(LOG_EVERY_S_ENV, "30"))
    batches = 0
    try:
        iterator = iter(_dataset(provider, layout, options, compression))
        while True:
            try:
                parsed = next(iterator)
            except StopIteration:
                break
            except tf.errors.OpError as exc:
                raise _read_error(provider, exc) from None
            if not batches:
                reuse_large_allocations()  # TensorFlow's generator dataset just reset them
            batch = layout.to_batch(parsed)
            if options.check_values:
                check_batch(batch, layout, provider)
            batches += 1
            throughput.add(batch.batch_size)
            now = time.perf_counter()
            if now - last_log >= log_every_s:
                last_log = now
                log.info("reader %s", format_metrics(rank=rank, batch=start_batch + batches,
                                                     rows=throughput.count, rows_per_s=throughput.per_second))
            yield batch
    finally:
        provider.close()
        log.info("reader done %s", format_metrics(
            rank=rank, batches=batches, rows=throughput.count, rows_per_s=throughput.per_second,
            skipped_shards=len(provider.skipped)))


@dataclass(frozen=True)
class BatchBreach:
    """The first breach of the per-batch checks in a batch: the rule's finding, its row and IDs."""

    spec: Any  # the column's contract spec (column, feature)
    what: str
    code: str
    row: int
    ids: list[int]  # the row's ID features, which find it again in a shard

    def describe(self) -> str:
        return f"column {self.spec.column!r} (feature {self.spec.feature}) {self.what} [{self.code}]"


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
    return BatchBreach(spec, breach.what, breach.code, row, ids)


def check_batch(batch: RecapBatch, layout: _Layout, provider: ShardProvider) -> None:
    """`batch_breach` as a DataError naming the shard, the record in it and the column."""
    breach = batch_breach(batch, layout)
    if breach is not None:
        found = _locate(provider, layout, breach.ids)
        where = f"{found[0]}: record {found[1]}" if found else \
            f"one of {', '.join(provider.current) or 'the shards read'} (row with IDs {breach.ids})"
        raise DataError(f"{where}: {breach.describe()}")


def _locate(provider: ShardProvider, layout: _Layout, ids: list[int]) -> tuple[str, int] | None:
    """(shard URI, record number) of the row with these IDs among the shards read lately.

    Rows carry no shard tag through tf.data (tagging each record cost ~40% of read throughput),
    so only this failure path reads the recent shards again to find the row.
    """
    import numpy as np
    import tensorflow as tf

    spec = {feature: layout.spec[feature] for feature in layout.id_features}
    wanted = np.asarray(ids, dtype=np.int64)
    for path, uri in provider.recent():
        position = 0
        for chunk in tf.data.TFRecordDataset(path, compression_type="GZIP").batch(4096):
            parsed = tf.io.parse_example(chunk, spec)
            stacked = np.concatenate([parsed[f].numpy().reshape(-1, 1) for f in layout.id_features], axis=1)
            hit = np.flatnonzero((stacked == wanted).all(axis=1))
            if len(hit):
                return uri, position + int(hit[0])
            position += len(stacked)
    return None


def _read_error(provider: ShardProvider, exc: Any) -> RecapError:
    """The provider's own error (it names the shard), else the damaged shard of the group being read.

    TF reads a group's shards in parallel and its error does not say which one failed; the shards
    are read again one at a time (only on this failure path) to name it.
    """
    if isinstance(provider.error, RecapError):
        return provider.error
    damaged = provider.find_unreadable()
    if damaged is not None:
        uri, message = damaged
        return DataError(f"{uri}: cannot read TFRecord shard: {message}")
    shards = ", ".join(provider.current) or "<no shard opened yet>"
    return DataError(f"{shards}: cannot read TFRecord shard: {exc.message}")
