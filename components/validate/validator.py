"""`run`: stream raw Parquet through the statistics, apply the rules and drift, write the outputs.

Outputs under `out_uri`: statistics.json (also the next run's `--reference-stats`),
anomalies.json, report.html (self-contained) and metrics.json (a few scalars for the
KFP UI). All four are written before the caller learns about errors, so a failing step
still leaves its evidence behind.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from components.common import storage
from components.common.errors import StorageError
from components.common.logs import Throughput, format_metrics
from components.common.manifest import ManifestFile
from components.common.schema import Schema
from components.validate import drift as drift_mod
from components.validate.anomalies import ERROR, Anomaly, Findings, make
from components.validate.config import ValidationConfig
from components.validate.constants import ANOMALIES_FILE, METRICS_FILE, REPORT_FILE, STATISTICS_FILE
from components.validate.inputs import SKIP, column_block, list_inputs, plan_column
from components.validate.report import render_report
from components.validate.rules import missing_share_filter, statistics_rules
from components.validate.stats import Where, make_accumulator

log = logging.getLogger(__name__)

STATISTICS_VERSION = 1


@dataclass(frozen=True)
class ValidationResult:
    anomalies: tuple[Anomaly, ...]
    has_errors: bool
    statistics_uri: str
    anomalies_uri: str
    report_uri: str
    metrics_uri: str
    rows: int
    files: int
    metrics: dict[str, float]

    @property
    def errors(self) -> list[Anomaly]:
        return [a for a in self.anomalies if a.is_error]


@dataclass
class _FileRead:
    uri: str
    rows: int = 0
    decoded_bytes: int = 0


def _row_bytes(schema: Schema) -> int:
    return sum(spec.length * spec.arrow_value_type.byte_width for spec in schema.features)


def _batches(parquet: pq.ParquetFile, batch_rows: int, columns: list[str]) -> Iterator[pa.RecordBatch]:
    """Record batches one row group at a time: one reader over a whole file buffers far
    more than a row group (its peak grew with the file), this one stays flat."""
    for group in range(parquet.num_row_groups):
        yield from parquet.iter_batches(batch_size=batch_rows, row_groups=[group], columns=columns)


def _read_file(uri: str, schema: Schema, accumulators: dict, config: ValidationConfig, findings: Findings,
               expected: ManifestFile | None, columns_read: set[str], throughput: Throughput) -> _FileRead:
    """Stream one file's record batches into the accumulators; problems become findings."""
    result = _FileRead(uri)
    try:
        handle = storage.open_read(uri)
    except FileNotFoundError:
        findings.add("unreadable_file", None, 1, uri, reason="file not found")
        return result
    try:
        try:
            parquet = pq.ParquetFile(handle)
        except (pa.ArrowException, OSError, ValueError) as exc:
            findings.add("unreadable_file", None, 1, uri, reason=str(exc)[:200])
            return result
        file_schema = parquet.schema_arrow
        num_rows = parquet.metadata.num_rows
        file_bytes = storage.size(uri) if expected is not None else None
        if expected is not None and (expected.records != num_rows or expected.bytes != file_bytes):
            findings.add("manifest_mismatch", None, 1, uri, file_rows=num_rows, manifest_records=expected.records,
                         bytes=file_bytes, manifest_bytes=expected.bytes)
        plans = {}
        for spec in schema.features:
            index = file_schema.get_field_index(spec.column)
            if index < 0:
                findings.add("missing_column", spec.column, 1, uri)
                continue
            plan = plan_column(spec, file_schema.field(index).type, uri, num_rows, findings)
            if plan.mode != SKIP:
                plans[spec.column] = plan
        known = {spec.column for spec in schema.features}
        for name in file_schema.names:
            if name not in known:
                findings.add("unexpected_column", name, 1, uri)
        if not plans:
            result.rows = num_rows
            return result
        columns_read.update(plans)
        try:
            for batch in _batches(parquet, config.rows_per_batch(_row_bytes(schema)), list(plans)):
                for name, plan in plans.items():
                    where = Where(uri, result.rows, findings)
                    block = column_block(batch.column(name), plan, where, accumulators[name])
                    if block is not None:
                        accumulators[name].add(block, where)
                result.rows += batch.num_rows
                result.decoded_bytes += batch.nbytes
                throughput.add(batch.num_rows, batch.nbytes)
        except (pa.ArrowException, OSError) as exc:
            findings.add("unreadable_file", None, 1, uri, row=result.rows, reason=str(exc)[:200])
    finally:
        handle.close()
    return result


def _sort_key(anomaly: Anomaly) -> tuple:
    return (anomaly.severity != ERROR, anomaly.code, anomaly.column or "")


def run(input_uri: str, schema: Schema, out_uri: str, config: ValidationConfig,
        reference_stats_uri: str | None = None) -> ValidationResult:
    """Validate the raw Parquet under `input_uri` against `schema` (and the statistics at
    `reference_stats_uri`, for drift); write outputs to `out_uri`."""
    reference = None
    if reference_stats_uri:
        try:
            reference = storage.read_json(reference_stats_uri)
        except FileNotFoundError as exc:
            raise StorageError(f"{reference_stats_uri}: reference statistics not found") from exc
    findings = Findings(config.max_examples)
    inputs = list_inputs(input_uri, findings)
    accumulators = {spec.column: make_accumulator(spec, config.top_ids) for spec in schema.features}
    columns_read: set[str] = set()
    throughput = Throughput()
    files = []
    for uri in tqdm(inputs.files, unit="file", desc="validate", disable=None):
        files.append(_read_file(uri, schema, accumulators, config, findings, inputs.expected.get(uri),
                                columns_read, throughput))
    rows = sum(f.rows for f in files)
    statistics: dict[str, Any] = {
        "version": STATISTICS_VERSION, "schema": schema.name, "schema_hash": schema.hash, "input": input_uri,
        "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "rows": rows, "decoded_bytes": sum(f.decoded_bytes for f in files),
        "files": [{"uri": f.uri, "rows": f.rows, "decoded_bytes": f.decoded_bytes} for f in files],
        "columns": {name: {**acc.to_json(), "read": name in columns_read} for name, acc in accumulators.items()},
    }
    anomalies = findings.anomalies(config.severity) + statistics_rules(statistics, config, findings)
    anomalies = missing_share_filter(anomalies, statistics, config)
    if not inputs.files or rows == 0:
        what = "no Parquet files" if not inputs.files else f"{len(inputs.files)} file(s) but no rows"
        anomalies.append(make("empty_input", None, len(inputs.files), f"{input_uri}: {what}", config.severity,
                              [{"file": f.uri} for f in files[: config.max_examples]]))
    drifts: list[drift_mod.ColumnDrift] = []
    if reference is not None:
        drifts, drift_anomalies = drift_mod.compare(statistics, reference, config)
        anomalies += drift_anomalies
        statistics["drift"] = {"reference": reference_stats_uri, "columns": {d.column: d.to_json() for d in drifts}}
    anomalies.sort(key=_sort_key)
    has_errors = any(a.is_error for a in anomalies)
    seconds = throughput.seconds
    metrics = {
        "rows": rows, "files": len(inputs.files), "decoded_mb": statistics["decoded_bytes"] / 1e6,
        "rows_per_s": rows / seconds, "mb_per_s": statistics["decoded_bytes"] / 1e6 / seconds,
        "anomalies_error": sum(a.is_error for a in anomalies),
        "anomalies_warning": sum(not a.is_error for a in anomalies),
        "max_drift_numeric": max((d.max for d in drifts if d.measure == "js"), default=0.0),
        "max_drift_categorical": max((d.max for d in drifts if d.measure == "linf"), default=0.0),
        "passed": 0 if has_errors else 1,
    }
    uris = {name: storage.join(out_uri, name) for name in (STATISTICS_FILE, ANOMALIES_FILE, REPORT_FILE, METRICS_FILE)}
    # compact: the C encoder is ~10x faster than indented output on prod-sized histograms
    storage.write_text(uris[STATISTICS_FILE], json.dumps(statistics, separators=(",", ":")))
    storage.write_json(uris[ANOMALIES_FILE], {"input": input_uri, "has_errors": has_errors,
                                              "anomalies": [a.to_json() for a in anomalies]})
    storage.write_text(uris[REPORT_FILE], render_report(statistics, anomalies, drifts, metrics, schema))
    storage.write_json(uris[METRICS_FILE], metrics)
    log.info("validated %s", format_metrics(rows=rows, files=len(inputs.files), rows_per_s=metrics["rows_per_s"],
                                            mb_per_s=metrics["mb_per_s"], errors=metrics["anomalies_error"],
                                            warnings=metrics["anomalies_warning"], out=out_uri))
    return ValidationResult(
        anomalies=tuple(anomalies), has_errors=has_errors, statistics_uri=uris[STATISTICS_FILE],
        anomalies_uri=uris[ANOMALIES_FILE], report_uri=uris[REPORT_FILE], metrics_uri=uris[METRICS_FILE],
        rows=rows, files=len(inputs.files), metrics=metrics,
    )
