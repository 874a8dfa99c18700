"""What a conversion will do: which Parquet files, which rows go to which shard, which split.

The input is cut into `shards` contiguous, near-equal row ranges. Task `i` reads range `i`
and writes `train/part-i` and `eval/part-i`. A row's split depends only on a hash of its
split key, so one user never lands in both splits, and every shard is a pure function of
(input, settings): the same input gives byte-identical shards whatever the worker count.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from components.common import storage
from components.common.errors import DataError, SchemaError
from components.common.hashing import splitmix64
from components.common.manifest import MANIFEST_NAME, ManifestFile
from components.common.raw_inputs import list_raw_inputs
from components.common.schema import FeatureSpec, Schema
from components.records.layout import SPLITS, shard_name, split_uri

_SPLIT_SALT = 0x5EED_0F_5E1EC7


@dataclass(frozen=True)
class FileSlice:
    """Rows [start, stop) of one Parquet file."""

    uri: str
    start: int
    stop: int


@dataclass(frozen=True)
class ShardTask:
    index: int
    slices: tuple[FileSlice, ...]
    outputs: dict[str, str]  # split -> shard URI

    @property
    def rows(self) -> int:
        return sum(s.stop - s.start for s in self.slices)


@dataclass(frozen=True)
class InputFiles:
    files: list[str]
    expected: dict[str, ManifestFile]  # manifest entry per file, when the input has a manifest


def list_input_files(input_uri: str) -> InputFiles:
    """The Parquet files to convert (components.common.raw_inputs); none at all is a data error, as in validate."""
    inputs = list_raw_inputs(input_uri)
    if not inputs.files:
        raise DataError(f"{input_uri}: no Parquet files (and no {MANIFEST_NAME}) found [empty_input]")
    return InputFiles(list(inputs.files), inputs.expected)


def check_file_schema(uri: str, arrow_schema: pa.Schema, schema: Schema) -> None:
    """Every schema column is present with its contract type (or a variable list of the same values)."""
    for spec in schema.features:
        index = arrow_schema.get_field_index(spec.column)
        if index < 0:
            raise DataError(f"{uri}: column {spec.column!r} ({spec.name}) is missing [missing_column]")
        actual = arrow_schema.field(index).type
        if _type_fits(actual, spec):
            continue
        if pa.types.is_fixed_size_list(actual) and actual.value_type == spec.arrow_value_type:
            raise DataError(f"{uri}: column {spec.column!r} has {actual.list_size} values per row, schema "
                            f"{schema.name} says {spec.length} [wrong_list_length]")
        raise DataError(f"{uri}: column {spec.column!r} has type {actual}, schema {schema.name} expects "
                        f"{spec.arrow_type} [wrong_type]")


def _type_fits(actual: pa.DataType, spec: FeatureSpec) -> bool:
    if actual == spec.arrow_type:
        return True
    if spec.is_scalar:
        return False
    # Variable-length lists are accepted; their lengths are checked row by row.
    return (pa.types.is_list(actual) or pa.types.is_large_list(actual)) and actual.value_type == spec.arrow_value_type


def file_rows(inputs: InputFiles, schema: Schema) -> list[int]:
    """Row count of each file, from its footer; also checks the columns' types and the manifest's counts."""
    counts = []
    for uri in inputs.files:
        try:
            with storage.open_read(uri) as handle:
                parquet = pq.ParquetFile(handle)
                check_file_schema(uri, parquet.schema_arrow, schema)
                counts.append(parquet.metadata.num_rows)
        except FileNotFoundError as exc:
            raise DataError(f"{uri}: listed input file not found [unreadable_file]") from exc
        except (pa.ArrowInvalid, OSError) as exc:
            raise DataError(f"{uri}: not a readable Parquet file ({exc}) [unreadable_file]") from exc
        expected = inputs.expected.get(uri)
        if expected is not None and (expected.records != counts[-1] or expected.bytes != storage.size(uri)):
            raise DataError(f"{uri}: {counts[-1]} rows, {storage.size(uri)} bytes; {MANIFEST_NAME} says "
                            f"{expected.records} rows, {expected.bytes} bytes [manifest_mismatch]")
    if not sum(counts):
        raise DataError(f"{inputs.files[0]}: {len(counts)} Parquet file(s) but no rows [empty_input]")
    return counts


def plan_tasks(files: list[str], rows: list[int], shards: int, out_uri: str,
               compression: str = "gzip") -> list[ShardTask]:
    """Cut the concatenated rows into `shards` contiguous, near-equal ranges."""
    total = sum(rows)
    bounds = [total * i // shards for i in range(shards + 1)]
    file_starts = np.concatenate([[0], np.cumsum(rows)]).tolist()
    tasks = []
    for index in range(shards):
        lo, hi = bounds[index], bounds[index + 1]
        slices = []
        for uri, f_lo, f_hi in zip(files, file_starts[:-1], file_starts[1:], strict=True):
            start, stop = max(lo, f_lo), min(hi, f_hi)
            if start < stop:
                slices.append(FileSlice(uri, start - f_lo, stop - f_lo))
        name = shard_name(index, shards, compression)
        tasks.append(ShardTask(index, tuple(slices), {s: storage.join(split_uri(out_uri, s), name) for s in SPLITS}))
    return tasks


def resolve_split_column(schema: Schema, split_key: str) -> FeatureSpec:
    """The split key names an ID or label column (`user_id`) or feature (`meta__user_id`)."""
    for spec in schema.features:
        if split_key in (spec.column, spec.name, spec.feature):
            if not spec.is_scalar:
                raise SchemaError(f"split key {split_key!r}: {spec.name} is a list feature; use an ID column")
            return spec
    choices = ", ".join(s.column for s in schema.features if s.is_scalar and s.role == "id")
    raise SchemaError(f"split key {split_key!r} is not a column of schema {schema.name} (IDs: {choices})")


def eval_mask(keys: np.ndarray, eval_fraction: float) -> np.ndarray:
    """True where a row goes to eval: splitmix64(key) mapped to [0, 1) is below the fraction."""
    z = splitmix64(keys, increment=_SPLIT_SALT)
    unit = (z >> np.uint64(11)).astype(np.float64) / float(1 << 53)
    return unit < eval_fraction
