"""Write synthetic raw Parquet in the schema's contract, plus its oracle and manifest.

Files are written one row group at a time (memory does not grow with `rows`), each row
group from its own seeded generator `(seed, file, row group)`, so output is deterministic
for a seed. Publication order: Parquet files, `oracle.json`, then `_MANIFEST.json` last.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from components.common import storage
from components.common.errors import ConfigError
from components.common.logs import format_metrics
from components.common.manifest import ManifestFile, manifest_uri, write_manifest
from components.common.schema import FeatureSpec, Role, Schema, load_schema
from components.datagen.constants import MANIFEST_KIND, ORACLE_FILE
from components.datagen.oracle import OracleAccumulator
from components.datagen.rows import RowBlock, sample_rows
from components.datagen.world import World, build_world

log = logging.getLogger(__name__)

ROW_GROUP_TARGET_BYTES = 32 * 1024 * 1024
MAX_ROW_GROUP_ROWS = 65_536


@dataclass(frozen=True)
class GenerateResult:
    out_uri: str
    files: tuple[str, ...]
    rows: int
    bytes: int
    oracle_uri: str
    manifest_uri: str
    oracle: dict[str, Any]
    seconds: float


def part_name(index: int, files: int) -> str:
    return f"part-{index:05d}-of-{files:05d}.parquet"


def row_bytes(schema: Schema) -> int:
    """Decoded bytes of one row in the raw contract."""
    return sum(spec.length * spec.arrow_value_type.byte_width for spec in schema.features)


def default_row_group_rows(schema: Schema) -> int:
    return int(max(256, min(MAX_ROW_GROUP_ROWS, ROW_GROUP_TARGET_BYTES // row_bytes(schema))))


def _id_source(spec: FeatureSpec, block: RowBlock) -> np.ndarray:
    if "author" in spec.name:
        return block.author_id
    if "user" in spec.name:
        return block.user_id
    return block.tweet_id


def block_to_table(schema: Schema, block: RowBlock) -> pa.Table:
    """Arrow table in the raw contract: fixed_size_list per vector group, scalars for IDs and labels."""
    embeddings = {spec.name: i for i, spec in enumerate(schema.embeddings)}
    labels = {spec.name: i for i, spec in enumerate(schema.labels)}
    columns = []
    for spec in schema.features:
        if spec.role == Role.CONTINUOUS:
            values = block.continuous
        elif spec.role == Role.BINARY:
            values = block.binary
        elif spec.role == Role.DISCRETE:
            values = block.discrete
        elif spec.role == Role.EMBEDDING:
            values = block.embeddings[embeddings[spec.name]]
        elif spec.role == Role.ID:
            values = _id_source(spec, block)
        else:
            values = block.labels[:, labels[spec.name]]
        flat = pa.array(np.ascontiguousarray(values, dtype=spec.arrow_value_type.to_pandas_dtype()).ravel())
        columns.append(flat if spec.is_scalar else pa.FixedSizeListArray.from_arrays(flat, spec.length))
    return pa.Table.from_arrays(columns, schema=schema.raw_arrow_schema())


def _write_file(uri: str, schema: Schema, world: World, seed: int, file_index: int, rows: int,
                row_group_rows: int, shift: float, oracle: OracleAccumulator, progress: tqdm) -> ManifestFile:
    arrow_schema = schema.raw_arrow_schema()
    scalar_columns = [spec.column for spec in schema.features if spec.is_scalar]
    with storage.open_write(uri) as out:
        writer = pq.ParquetWriter(out, arrow_schema, compression="snappy", use_dictionary=False,
                                  write_statistics=scalar_columns)
        try:
            if rows == 0:
                writer.write_table(arrow_schema.empty_table())
            for group, start in enumerate(range(0, rows, row_group_rows)):
                n = min(row_group_rows, rows - start)
                rng = np.random.default_rng([seed, file_index, group])
                block = sample_rows(world, rng, n, shift)
                oracle.add(block.labels, block.probabilities)
                writer.write_table(block_to_table(schema, block), row_group_size=n)
                progress.update(n)
        finally:
            writer.close()
    return ManifestFile(path=storage.basename(uri), records=rows, bytes=out.bytes_written, sha256=out.sha256)


def generate(schema: Schema | str, out_uri: str, rows: int, files: int, seed: int,
             shift: float = 0.0, row_group_rows: int | None = None) -> GenerateResult:
    """Write `rows` rows over `files` Parquet files below `out_uri`; see the module docstring."""
    schema = load_schema(schema) if isinstance(schema, str) else schema
    if rows < 0 or files < 1:
        raise ConfigError(f"need rows >= 0 and files >= 1, got rows={rows} files={files}")
    row_group_rows = row_group_rows or default_row_group_rows(schema)
    if row_group_rows < 1:
        raise ConfigError(f"row_group_rows must be >= 1, got {row_group_rows}")
    started = time.perf_counter()
    # An old manifest would vouch for files we are about to replace: remove it first.
    storage.delete(manifest_uri(out_uri))
    world = build_world(schema)
    oracle = OracleAccumulator([spec.name for spec in schema.labels])
    per_file = [rows // files + (1 if i < rows % files else 0) for i in range(files)]
    entries, uris = [], []
    with tqdm(total=rows, unit="row", desc="generate", disable=None) as progress:
        for index, file_rows in enumerate(per_file):
            uri = storage.join(out_uri, part_name(index, files))
            entries.append(_write_file(uri, schema, world, seed, index, file_rows, row_group_rows,
                                       shift, oracle, progress))
            uris.append(uri)
    oracle_json = oracle.to_json(schema.name, seed, schema.task_names, shift)
    oracle_uri = storage.join(out_uri, ORACLE_FILE)
    storage.write_json(oracle_uri, oracle_json)
    write_manifest(out_uri, MANIFEST_KIND, schema.hash, entries,
                   extra={"schema": schema.name, "seed": seed, "shift": shift, "rows": rows,
                          "row_group_rows": row_group_rows, "generator": "recap data generate"})
    seconds = time.perf_counter() - started
    total_bytes = sum(e.bytes for e in entries)
    log.info("generated %s", format_metrics(rows=rows, files=files, rows_per_s=rows / max(seconds, 1e-9),
                                            mb_per_s=rows * row_bytes(schema) / 1e6 / max(seconds, 1e-9),
                                            parquet_mb=total_bytes / 1e6, out=out_uri))
    return GenerateResult(out_uri=out_uri, files=tuple(uris), rows=rows, bytes=total_bytes,
                          oracle_uri=oracle_uri, manifest_uri=manifest_uri(out_uri),
                          oracle=oracle_json, seconds=seconds)
