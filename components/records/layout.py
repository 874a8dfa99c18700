"""The layout of a converted dataset: what convert writes and the reader expects.

```
<out>/train/part-00000-of-00004.tfrecord.gz ... _MANIFEST.json  (kind "tfrecord")
<out>/eval/ part-00000-of-00004.tfrecord.gz ... _MANIFEST.json
```
Two record layouts, told apart by the manifest's `schema_hash`:
- `segdense` (the default, and the one to use wherever another reader must understand the
  data): one `tf.train.Example` per row with the schema's TFRecord feature names (the
  original's segdense names) as fixed-length float/int64 lists, every feature, gzip.
- `packed` (for training): only what a model reads, as little-endian bytes features at fixed
  byte offsets of fixed-size records, which the reader slices out without per-value decoding:
  continuous and binary cut to the model's truncation, the embeddings, the IDs, and the
  labels of the tasks; no discrete group, no other labels. Uncompressed by default: the
  rows are mostly float noise that gzip shrinks by a few percent at a large read cost.
  Its hash covers the schema's hash plus what is kept, so shards packed for one model
  are refused by a reader that needs more.
Plain Python: the convert image has no torch.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Literal

from components.common import storage
from components.common.errors import DataError, SchemaError
from components.common.manifest import Manifest, read_manifest
from components.common.schema import Role, Schema

MANIFEST_KIND = "tfrecord"
TRAIN_SPLIT = "train"
EVAL_SPLIT = "eval"
SPLITS = (TRAIN_SPLIT, EVAL_SPLIT)

SEGDENSE = "segdense"
PACKED = "packed"
COMPRESSIONS = {"gzip": "GZIP", "none": ""}  # manifest / option name -> TFRecord compression_type
PACKED_PREFIX = "recap.packed."  # feature names of the packed layout
_PACKED_VERSION = "packed-v1"


def split_uri(dataset_uri: str, split: str) -> str:
    """`<dataset>/train` or `<dataset>/eval`: the directory that holds a split and its manifest."""
    return storage.join(dataset_uri, split)


def shard_name(index: int, count: int, compression: str = "gzip") -> str:
    suffix = ".tfrecord.gz" if compression == "gzip" else ".tfrecord"
    return f"part-{index:05d}-of-{count:05d}{suffix}"


def parse_spec(schema: Schema) -> dict[str, tuple[str, int]]:
    """TFRecord feature name -> (dtype, length) of the segdense layout, framework-free."""
    return {f.feature: (f.dtype, f.length) for f in schema.features}


def tf_feature_spec(schema: Schema) -> dict[str, Any]:
    """The `tf.io.parse_example` spec of the segdense layout (imports TensorFlow only when asked)."""
    import tensorflow as tf

    dtypes = {"float32": tf.float32, "int64": tf.int64}
    return {f.feature: tf.io.FixedLenFeature([f.length], dtypes[f.dtype]) for f in schema.features}


@dataclass(frozen=True)
class PackedField:
    """One bytes feature of a packed record: which part of a batch, numpy dtype, values per row."""

    feature: str  # TFRecord feature name
    part: str  # "continuous", "binary", "ids", "labels" or "embedding/<name>"
    dtype: str  # little-endian numpy dtype: "<f4", "u1", "<i8"
    length: int


@dataclass(frozen=True)
class RecordLayout:
    """Which layout a split's records have; `continuous`/`binary` are the packed values kept per row."""

    kind: Literal["segdense", "packed"] = SEGDENSE
    continuous: int | None = None  # packed: values kept (None: all of the schema's)
    binary: int | None = None

    @classmethod
    def packed(cls, schema: Schema, continuous: int | None, binary: int | None) -> RecordLayout:
        """The packed layout for a model that reads the first `continuous` / `binary` values."""
        cont_len, bin_len = schema.group(Role.CONTINUOUS).length, schema.group(Role.BINARY).length
        for name, kept, length in (("continuous", continuous, cont_len), ("binary", binary, bin_len)):
            if kept is not None and not 0 <= kept <= length:
                raise SchemaError(f"packed layout: {kept} {name} values kept, schema {schema.name} has {length}")
        return cls(PACKED, cont_len if continuous is None else continuous, bin_len if binary is None else binary)

    def hash(self, schema: Schema) -> str:
        """The manifest's `schema_hash`: the schema's own for segdense, schema + kept values for packed."""
        if self.kind == SEGDENSE:
            return schema.hash
        text = f"{schema.hash}|{_PACKED_VERSION}|continuous={self.continuous}|binary={self.binary}"
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def describe(self) -> str:
        if self.kind == SEGDENSE:
            return SEGDENSE
        return f"{PACKED}(continuous={self.continuous}, binary={self.binary})"

    def to_extra(self) -> dict[str, Any]:
        extra: dict[str, Any] = {"layout": self.kind}
        if self.kind == PACKED:
            extra["packed"] = {"continuous": self.continuous, "binary": self.binary, "version": _PACKED_VERSION}
        return extra

    @classmethod
    def from_extra(cls, extra: dict[str, Any]) -> RecordLayout:
        """The layout a manifest declares (manifests written before layouts existed are segdense)."""
        if extra.get("layout", SEGDENSE) == SEGDENSE:
            return cls()
        packed = extra.get("packed", {})
        return cls(PACKED, packed.get("continuous"), packed.get("binary"))

    def fields(self, schema: Schema) -> list[PackedField]:
        """The packed record's bytes features, in the order they are written."""
        out = [
            PackedField(PACKED_PREFIX + "continuous", "continuous", "<f4", int(self.continuous or 0)),
            PackedField(PACKED_PREFIX + "binary", "binary", "u1", int(self.binary or 0)),
        ]
        out += [PackedField(f"{PACKED_PREFIX}embedding.{s.name}", f"embedding/{s.name}", "<f4", s.length)
                for s in schema.embeddings]
        out.append(PackedField(PACKED_PREFIX + "ids", "ids", "<i8", len(schema.ids)))
        out.append(PackedField(PACKED_PREFIX + "labels", "labels", "u1", len(schema.tasks)))
        return out


def varint(value: int) -> bytes:
    """Protobuf base-128 varint of a non-negative int (negative int64 as its 64-bit two's complement)."""
    value &= (1 << 64) - 1
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _bytes_entry_head(key: str, payload_len: int) -> bytes:
    """Protobuf bytes before the payload of a `Features.feature` map entry holding one bytes value."""
    bytes_list = b"\x0a" + varint(payload_len)  # BytesList.value (field 1)
    feature = b"\x0a" + varint(len(bytes_list) + payload_len) + bytes_list  # Feature.bytes_list (field 1)
    key_bytes = key.encode()
    head = b"\x0a" + varint(len(key_bytes)) + key_bytes + b"\x12" + varint(len(feature) + payload_len)
    return b"\x0a" + varint(len(head) + len(feature) + payload_len) + head + feature


@dataclass(frozen=True)
class PackedRecord:
    """The fixed shape of every serialized packed record: a `tf.train.Example` whose bytes
    features (in key order, as deterministic serialization writes them) all have fixed sizes,
    so each payload sits at the same byte offset in every record."""

    template: bytes  # a whole record with zero payloads: every header byte in place
    slots: tuple[tuple[PackedField, int, int], ...]  # (field, payload offset, payload bytes)

    @classmethod
    def of(cls, layout: RecordLayout, schema: Schema) -> PackedRecord:
        body, slots = bytearray(), []
        for field in sorted(layout.fields(schema), key=lambda f: f.feature):
            size = field.length * _ITEMSIZE[field.dtype]
            body += _bytes_entry_head(field.feature, size)
            slots.append((field, len(body), size))
            body += bytes(size)
        head = b"\x0a" + varint(len(body))  # Example.features (field 1)
        return cls(head + bytes(body), tuple((f, len(head) + at, n) for f, at, n in slots))

    @property
    def size(self) -> int:
        return len(self.template)


_ITEMSIZE = {"<f4": 4, "u1": 1, "<i8": 8}


def manifest_compression(extra: dict[str, Any]) -> str:
    """TFRecord `compression_type` of a split's shards, from its manifest."""
    value = str(extra.get("compression", "GZIP")).upper()
    return "" if value in ("", "NONE") else value


@dataclass(frozen=True)
class ModelReads:
    """The continuous and binary values a model reads: its truncation (None: all the schema has)."""

    continuous: int | None = None
    binary: int | None = None

    @classmethod
    def of(cls, featurization: Any) -> ModelReads:
        """From the model config's `featurization` section (components.ranker.config)."""
        return cls(featurization.continuous_truncation, featurization.binary_truncation)

    @classmethod
    def from_trainer_config(cls, uri: str) -> ModelReads:
        """From a trainer YAML (only its `model.featurization` is read and checked)."""
        from components.common.config import parse_config, read_yaml
        from components.ranker.config import DoubleNormLogConfig

        model = read_yaml(uri).get("model") or {}
        section = model.get("featurization") or {}
        return cls.of(parse_config(section, DoubleNormLogConfig, f"{uri}: model.featurization"))

    def layout(self, schema: Schema) -> RecordLayout:
        """The packed layout holding exactly what this model reads."""
        return RecordLayout.packed(schema, self.continuous, self.binary)


def load_split_manifest(manifest_uri: str, schema: Schema,
                        reads: ModelReads | None = None) -> tuple[Manifest, str, RecordLayout]:
    """The split's manifest (directory or `_MANIFEST.json`) and its record layout, checked.

    The manifest's schema hash must be the one its declared layout has for `schema`; a
    packed split must also hold every value `reads` asks for. A mismatch is one SchemaError
    naming the split's first shard.
    """
    manifest, directory = read_manifest(manifest_uri)
    if manifest.kind != MANIFEST_KIND:
        raise DataError(f"{directory}: manifest kind is {manifest.kind!r}, expected {MANIFEST_KIND!r} (a converted split)")
    layout = RecordLayout.from_extra(manifest.extra)
    first = storage.join(directory, manifest.files[0].path) if manifest.files else directory
    if manifest.schema_hash != layout.hash(schema):
        written = manifest.extra.get("schema", "?")
        raise SchemaError(
            f"{first}: shards were written for schema {written} in layout {layout.describe()} (hash "
            f"{manifest.schema_hash}), the reader was given schema {schema.name} (that layout's hash "
            f"{layout.hash(schema)})"
        )
    if layout.kind == PACKED and reads is not None:
        for name, need, have in (("continuous", reads.continuous, layout.continuous),
                                 ("binary", reads.binary, layout.binary)):
            want = schema.group(name).length if need is None else need
            if have is None or have < want:
                raise SchemaError(
                    f"{first}: shards are in layout {layout.describe()}, the model reads {want} {name} "
                    f"values; convert again with --layout packed and this model's trainer config"
                )
    return manifest, directory, layout
