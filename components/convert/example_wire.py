"""`tf.train.Example` protobuf wire format and TFRecord framing, built from numpy buffers.

Building one `tf.train.Example` object per row is the known bottleneck of TFRecord writers.
Here every feature of a block of rows is encoded at once: float lists are the raw
little-endian bytes of a [rows, length] array, int64 lists are varints encoded with numpy.
Per row only the few length-dependent protobuf headers are looked up (memoized) and joined.

The bytes equal `tf.train.Example.SerializeToString(deterministic=True)`: map entries in
key order, packed lists, proto3 field tags. TFRecord framing is
`u64 length | masked crc32c(length) | data | masked crc32c(data)`, as TensorFlow writes it.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import google_crc32c
import numpy as np

from components.common.schema import FeatureSpec, Schema
from components.records.layout import varint

_MASK_DELTA = 0xA282EAD8
_U32 = 0xFFFFFFFF
_FLOAT_LIST_TAG = b"\x12"  # Feature.float_list = 2, length-delimited
_INT64_LIST_TAG = b"\x1a"  # Feature.int64_list = 3, length-delimited
_FIELD1 = b"\x0a"  # field 1, length-delimited (Example.features, Features.feature, key, value list)
_FIELD2 = b"\x12"  # field 2, length-delimited (map entry value)


def masked_crc32c(data: bytes | memoryview) -> int:
    """TFRecord's checksum: crc32c rotated right by 15 bits plus a constant."""
    crc = google_crc32c.value(data)
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & _U32


def varint_rows(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Packed varints of each row of a [rows, length] integer array.

    Returns (flat uint8 bytes of all rows in order, row offsets [rows + 1]). Values in
    [0, 128) — binary flags, labels, small categories — take the one-byte fast path.
    """
    rows, length = values.shape
    if values.size and values.min() >= 0 and values.max() < 0x80:
        flat = np.ascontiguousarray(values, dtype=np.uint8).reshape(-1)
        return flat, np.arange(rows + 1, dtype=np.int64) * length
    u = np.ascontiguousarray(values, dtype=np.int64).reshape(-1).view(np.uint64)
    nbytes = np.ones(u.shape, dtype=np.int64)
    for k in range(1, 10):
        nbytes += u >= np.uint64(1 << (7 * k))
    ends = np.cumsum(nbytes)
    starts = ends - nbytes
    out = np.empty(int(ends[-1]) if ends.size else 0, dtype=np.uint8)
    for k in range(int(nbytes.max()) if nbytes.size else 0):
        sel = nbytes > k
        chunk = ((u[sel] >> np.uint64(7 * k)) & np.uint64(0x7F)).astype(np.uint8)
        chunk |= (nbytes[sel] > k + 1).astype(np.uint8) << np.uint8(7)
        out[starts[sel] + k] = chunk
    row_bytes = nbytes.reshape(rows, length).sum(axis=1)
    offsets = np.zeros(rows + 1, dtype=np.int64)
    np.cumsum(row_bytes, out=offsets[1:])
    return out, offsets


@dataclass
class _EncodedFeature:
    """One feature of a block: flat payload bytes and row offsets into them."""

    prefixes: dict[int, bytes]  # payload length -> every header byte before the payload
    payload: memoryview
    offsets: np.ndarray


class ExampleEncoder:
    """Serializes blocks of rows (numpy arrays per schema feature) into TFRecord bytes."""

    def __init__(self, schema: Schema) -> None:
        # Sorted by TFRecord key: the order protobuf's deterministic serialization uses.
        self.features: tuple[FeatureSpec, ...] = tuple(sorted(schema.features, key=lambda f: f.feature))
        self._prefix_cache: dict[str, dict[int, bytes]] = {f.name: {} for f in self.features}

    def _prefix(self, spec: FeatureSpec, payload_len: int) -> bytes:
        """Header bytes of a map entry whose list payload has `payload_len` bytes."""
        cache = self._prefix_cache[spec.name]
        found = cache.get(payload_len)
        if found is None:
            key = spec.feature.encode()
            value_list = _FIELD1 + varint(payload_len)  # FloatList/Int64List.value, packed
            kind = _FLOAT_LIST_TAG if spec.dtype == "float32" else _INT64_LIST_TAG
            feature_len = len(value_list) + payload_len
            feature = kind + varint(feature_len) + value_list
            entry_head = _FIELD1 + varint(len(key)) + key + _FIELD2 + varint(len(feature) + payload_len)
            entry_len = len(entry_head) + len(feature) + payload_len
            found = _FIELD1 + varint(entry_len) + entry_head + feature
            cache[payload_len] = found
        return found

    def _encode_feature(self, spec: FeatureSpec, values: np.ndarray, rows: int) -> _EncodedFeature:
        values = values.reshape(rows, spec.length)
        if spec.dtype == "float32":
            data = np.ascontiguousarray(values, dtype="<f4")
            row_bytes = 4 * spec.length
            flat = data.reshape(-1).view(np.uint8)
            offsets = np.arange(rows + 1, dtype=np.int64) * row_bytes
        else:
            flat, offsets = varint_rows(values)
        return _EncodedFeature(self._prefix_cache[spec.name], memoryview(flat), offsets)

    def serialize(self, columns: Mapping[str, np.ndarray], rows: int) -> list[bytes]:
        """Serialized `tf.train.Example` of each row; `columns` maps feature name -> [rows, length]."""
        encoded = [(spec, self._encode_feature(spec, columns[spec.name], rows)) for spec in self.features]
        per_feature = []
        for spec, enc in encoded:
            lengths = np.diff(enc.offsets)
            distinct = np.unique(lengths)
            for n in distinct.tolist():
                self._prefix(spec, n)
            per_feature.append((enc, enc.offsets.tolist()))
        out = []
        for row in range(rows):
            pieces: list[bytes | memoryview] = [b""]
            total = 0
            for enc, offsets in per_feature:
                start, end = offsets[row], offsets[row + 1]
                prefix = enc.prefixes[end - start]
                pieces.append(prefix)
                pieces.append(enc.payload[start:end])
                total += len(prefix) + end - start
            pieces[0] = _FIELD1 + varint(total)
            out.append(b"".join(pieces))
        return out

    def records(self, columns: Mapping[str, np.ndarray], rows: int) -> bytes:
        """The TFRecord-framed bytes of a block of rows, ready to compress and append to a shard."""
        return frame_records(self.serialize(columns, rows))


def frame_records(examples: Sequence[bytes]) -> bytes:
    """TFRecord framing of many serialized records at once."""
    pack_q, pack_i, crc = struct.Struct("<Q").pack, struct.Struct("<I").pack, masked_crc32c
    pieces = []
    for data in examples:
        length = pack_q(len(data))
        pieces += (length, pack_i(crc(length)), data, pack_i(crc(data)))
    return b"".join(pieces)
