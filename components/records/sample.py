"""A converted split's first records, read and checked without TensorFlow or torch.

The launcher (`recap launch`, the pipeline's train step) runs in an image with neither, and
must not ask a cluster for GPU nodes to train on a split that breaks the data contract: a
trainer rank would only find out after the pods are scheduled, the images pulled and torch,
TorchRec and TensorFlow imported (10+ s even on a laptop, minutes on a cluster).
`check_split_sample` reads the split's manifest (layout and schema hash, as the reader does)
and the first records of its first shards, and applies the per-batch rules the trainer's
reader applies (components.common.contract.per_batch_breach), naming the shard, the record
and the column. It is a sample, not a proof: the trainer's reader still checks every batch.

TFRecord framing (length, masked CRC-32C of the length, payload, masked CRC-32C of the
payload) is checked here as TensorFlow checks it; `tf.train.Example` is parsed with the
protobuf runtime from a descriptor built below in a private pool, so it never collides
with TensorFlow's own registration when both are loaded in one process.
"""

from __future__ import annotations

import gzip
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from typing import IO, Any

import numpy as np

from components.common import contract, storage
from components.common.errors import DataError
from components.common.schema import Schema
from components.records.layout import PACKED, ModelReads, load_split_manifest, manifest_compression

SAMPLE_RECORDS = 256  # records read from the start of a split: one typical per-rank batch
SAMPLE_SHARDS = 4  # shards those records are taken from, in manifest order

_CRC_MASK_DELTA = 0xA282EAD8


def masked_crc32c(data: bytes) -> int:
    """TFRecord's checksum: CRC-32C rotated right by 15 bits plus a constant."""
    import google_crc32c

    crc = google_crc32c.value(data)
    return (((crc >> 15) | (crc << 17)) + _CRC_MASK_DELTA) & 0xFFFFFFFF


def tfrecords(stream: IO[bytes], uri: str, limit: int) -> Iterator[bytes]:
    """Up to `limit` record payloads from the start of an (already decompressed) TFRecord stream;
    DataError naming `uri` and the record on a short read or a checksum that does not match."""
    for index in range(limit):
        head = stream.read(12)
        if not head:
            return
        if len(head) < 12:
            raise DataError(f"{uri}: record {index}: truncated record header")
        length, length_crc = struct.unpack("<QI", head)
        if masked_crc32c(head[:8]) != length_crc:
            raise DataError(f"{uri}: record {index}: corrupted record length (checksum mismatch)")
        payload = stream.read(length)
        tail = stream.read(4)
        if len(payload) < length or len(tail) < 4:
            raise DataError(f"{uri}: record {index}: truncated record ({len(payload)} of {length} bytes)")
        if masked_crc32c(payload) != struct.unpack("<I", tail)[0]:
            raise DataError(f"{uri}: record {index}: corrupted record (checksum mismatch)")
        yield payload


@cache
def example_class() -> Any:
    """The `tf.train.Example` message class, from a descriptor in a private pool."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    F = descriptor_pb2.FieldDescriptorProto
    file = descriptor_pb2.FileDescriptorProto(name="recap_example.proto", package="tensorflow", syntax="proto3")

    def message(name: str, *fields: tuple[str, int, int, int, str]) -> descriptor_pb2.DescriptorProto:
        out = file.message_type.add(name=name)
        for field_name, number, kind, label, type_name in fields:
            field = out.field.add(name=field_name, number=number, type=kind, label=label)
            if type_name:
                field.type_name = type_name
        return out

    repeated, optional = F.LABEL_REPEATED, F.LABEL_OPTIONAL
    message("BytesList", ("value", 1, F.TYPE_BYTES, repeated, ""))
    message("FloatList", ("value", 1, F.TYPE_FLOAT, repeated, ""))
    message("Int64List", ("value", 1, F.TYPE_INT64, repeated, ""))
    feature = message("Feature", ("bytes_list", 1, F.TYPE_MESSAGE, optional, ".tensorflow.BytesList"),
                      ("float_list", 2, F.TYPE_MESSAGE, optional, ".tensorflow.FloatList"),
                      ("int64_list", 3, F.TYPE_MESSAGE, optional, ".tensorflow.Int64List"))
    feature.oneof_decl.add(name="kind")
    for field in feature.field:
        field.oneof_index = 0
    features = message("Features", ("feature", 1, F.TYPE_MESSAGE, repeated, ".tensorflow.Features.FeatureEntry"))
    entry = features.nested_type.add(name="FeatureEntry")
    entry.options.map_entry = True
    entry.field.add(name="key", number=1, type=F.TYPE_STRING, label=optional)
    entry.field.add(name="value", number=2, type=F.TYPE_MESSAGE, label=optional, type_name=".tensorflow.Feature")
    message("Example", ("features", 1, F.TYPE_MESSAGE, optional, ".tensorflow.Features"))
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("tensorflow.Example"))


def _values(features: Any, name: str, dtype: str | None, uri: str, index: int) -> np.ndarray:
    """A feature's values as a numpy array (a bytes feature decoded as little-endian `dtype`)."""
    if name not in features:
        raise DataError(f"{uri}: record {index}: feature {name} is missing")
    feature = features[name]
    kind = feature.WhichOneof("kind")
    if kind == "bytes_list":
        (raw,) = feature.bytes_list.value
        return np.frombuffer(raw, dtype=dtype)
    if kind == "float_list":
        return np.asarray(feature.float_list.value, dtype=np.float32)
    if kind == "int64_list":
        return np.asarray(feature.int64_list.value, dtype=np.int64)
    raise DataError(f"{uri}: record {index}: feature {name} holds no values")


@dataclass(frozen=True)
class SampleResult:
    records: int  # records read and checked
    shards: int  # shards they came from


def check_split_sample(split_uri: str, schema: Schema, reads: ModelReads | None = None,
                       records: int = SAMPLE_RECORDS, shards: int = SAMPLE_SHARDS) -> SampleResult:
    """Read the first `records` records (spread over the first `shards` non-empty shards) of a split
    and apply the contract's per-batch rules; DataError/SchemaError naming the shard, record and column.
    """
    manifest, directory, layout = load_split_manifest(split_uri, schema, reads)
    compression = manifest_compression(manifest.extra)
    chosen = [f for f in manifest.files if f.records][:max(1, shards)]
    label_specs = [schema.task_label(task) for task in schema.tasks]
    if layout.kind == PACKED:  # one bytes feature holds every task's label, in task order
        by_part = {f.part: f for f in layout.fields(schema)}
        packed_labels = by_part["labels"].feature
        embedding_reads = [(spec, by_part[f"embedding/{spec.name}"].feature) for spec in schema.embeddings]
    else:
        embedding_reads = [(spec, spec.feature) for spec in schema.embeddings]

    def label_row(features: Any, uri: str, index: int) -> list[float]:
        if layout.kind == PACKED:
            return _values(features, packed_labels, "u1", uri, index).tolist()
        return [float(_values(features, spec.feature, None, uri, index)[0]) for spec in label_specs]

    example = example_class()
    checked = 0
    for number, entry in enumerate(chosen):
        uri = storage.join(directory, entry.path)
        quota = min(entry.records, (records - checked) // (len(chosen) - number) or 1)
        labels: list[list[float]] = []
        embeddings: list[list[np.ndarray]] = [[] for _ in embedding_reads]
        try:
            opened = storage.open_read(uri)
        except FileNotFoundError:
            raise DataError(f"{uri}: listed in the manifest but missing") from None
        with opened as raw:
            stream = gzip.GzipFile(fileobj=raw) if compression == "GZIP" else raw
            try:
                for index, payload in enumerate(tfrecords(stream, uri, quota)):
                    try:
                        features = example.FromString(payload).features.feature
                    except Exception as exc:  # protobuf's DecodeError
                        raise DataError(f"{uri}: record {index}: not a tf.train.Example ({exc})") from None
                    labels.append(label_row(features, uri, index))
                    for slot, (_, feature) in enumerate(embedding_reads):
                        embeddings[slot].append(_values(features, feature, "<f4", uri, index))
            except (OSError, EOFError, gzip.BadGzipFile) as exc:
                raise DataError(f"{uri}: cannot read TFRecord shard: {exc}") from None
        if not labels:
            raise DataError(f"{uri}: the manifest lists {entry.records} records, the shard holds none")
        matrix = np.asarray(labels)
        found = contract.per_batch_breach(
            [(spec, matrix[:, i]) for i, spec in enumerate(label_specs)],
            [(spec, np.stack(rows)) for (spec, _), rows in zip(embedding_reads, embeddings, strict=True)])
        if found is not None:
            spec, breach = found
            raise DataError(f"{uri}: record {int(breach.rows[0])}: {contract.describe_breach(spec, breach)}")
        checked += len(labels)
    return SampleResult(checked, len(chosen))
