"""A tiny raw-Parquet builder for convert and reader tests, straight from the schema's Arrow contract.

Values exercise the edges the wire format must keep exactly: NaN and inf in continuous,
negative and 62-bit discrete values, 62-bit IDs, repeated users (for the split property).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from components.common import storage
from components.common.manifest import ManifestFile, write_manifest
from components.common.schema import Role, Schema


def make_table(schema: Schema, rows: int, seed: int = 0, users: int = 50) -> pa.Table:
    """Random rows matching `schema.raw_arrow_schema()`; tweet IDs are unique per seed."""
    rng = np.random.default_rng(seed)
    arrays = []
    for spec in schema.features:
        if spec.role in (Role.CONTINUOUS, Role.EMBEDDING):
            values = rng.standard_normal((rows, spec.length)).astype(spec.raw_type)
            # One NaN/inf per element stays within the contract's max_non_finite_share (2%) from 50 rows.
            if spec.role == Role.CONTINUOUS and rows >= 50 and spec.length >= 3:
                values[0, 0], values[-1, 1], values[rows // 2, 2] = np.nan, np.inf, -np.inf
        elif spec.role == Role.BINARY:
            values = rng.integers(0, 2, (rows, spec.length)).astype(spec.raw_type)
        elif spec.role == Role.DISCRETE:
            values = rng.integers(0, 300, (rows, spec.length)).astype(spec.raw_type)
            if rows and spec.length >= 2:
                values[0, 0], values[-1, 1] = -5, (1 << 62) + 12345
        elif spec.role == Role.ID:
            if spec.name == "meta__user_id":
                pool = rng.integers(1, 1 << 62, users)
                values = pool[rng.integers(0, users, rows)]
            elif spec.name == "meta__tweet_id":
                values = seed * 10_000_000 + np.arange(rows, dtype=np.int64) + 1
            else:
                values = rng.integers(0, 1 << 62, rows)  # the contract: IDs are non-negative
            values = values.astype(spec.raw_type)
        else:
            values = (rng.random(rows) < 0.3).astype(spec.raw_type)
        if spec.is_scalar:
            arrays.append(pa.array(values, type=spec.arrow_type))
        else:
            flat = pa.array(values.reshape(-1), type=spec.arrow_value_type)
            arrays.append(pa.FixedSizeListArray.from_arrays(flat, spec.length))
    return pa.Table.from_arrays(arrays, schema=schema.raw_arrow_schema())


def write_raw(schema: Schema, out_uri: str, rows: int, files: int = 2, seed: int = 0,
              row_group_size: int = 64, manifest: bool = True) -> pa.Table:
    """Write `files` Parquet parts (and a raw manifest); returns the whole table in file order."""
    table = make_table(schema, rows, seed)
    entries = []
    bounds = [rows * i // files for i in range(files + 1)]
    for index in range(files):
        part = table.slice(bounds[index], bounds[index + 1] - bounds[index])
        name = f"part-{index:05d}.parquet"
        sink = pa.BufferOutputStream()
        pq.write_table(part, sink, row_group_size=row_group_size)
        data = sink.getvalue().to_pybytes()
        sha = storage.write_bytes(storage.join(out_uri, name), data)
        entries.append(ManifestFile(name, part.num_rows, len(data), sha))
    if manifest:
        write_manifest(out_uri, "raw-parquet", schema.hash, entries, {"rows": rows})
    return table


def table_columns(schema: Schema, table: pa.Table) -> dict[str, np.ndarray]:
    """Feature name -> [rows, length] array in TFRecord dtypes (float32 / int64)."""
    out = {}
    for spec in schema.features:
        column = table.column(spec.column).combine_chunks()
        values = column.to_numpy(zero_copy_only=False) if spec.is_scalar else column.flatten().to_numpy()
        out[spec.name] = values.reshape(table.num_rows, spec.length).astype(
            np.float32 if spec.dtype == "float32" else np.int64)
    return out


def row_fingerprints(schema: Schema, columns: dict[str, np.ndarray]) -> list[bytes]:
    """Each row's exact bytes over every feature (float bits included), sorted: a multiset of rows."""
    parts = [np.ascontiguousarray(columns[spec.name]).view(np.uint8).reshape(len(columns[spec.name]), -1)
             for spec in schema.features]
    joined = np.concatenate(parts, axis=1)
    return sorted(row.tobytes() for row in joined)
