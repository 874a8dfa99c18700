"""`convert.run`: raw Parquet -> TFRecord shards (segdense or packed layout) in `train/` and `eval/`, manifests last.

Order of events, so that nothing half-written is ever consumed:
1. delete each split's old manifest, then the rest of the split prefix (a rerun replaces
   partial output);
2. convert every shard task (in `workers` processes; the calling process is one of them);
   each shard file appears atomically when complete;
3. only when every task succeeded, write `train/_MANIFEST.json` and `eval/_MANIFEST.json`.
"""

from __future__ import annotations

import importlib.util
import logging
import multiprocessing as mp
import os
import queue
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from pydantic import Field, model_validator

from components.common import contract, storage
from components.common.config import StrictModel
from components.common.errors import ConfigError, DataError, RecapError, SchemaError
from components.common.logs import Throughput, format_metrics
from components.common.manifest import Manifest, ManifestFile, manifest_uri, write_manifest
from components.common.schema import Schema
from components.convert import plan
from components.convert.shard import NonFinite, ShardJob, ShardOutput, ValueChecks, convert_shard
from components.records.layout import (
    COMPRESSIONS,
    EVAL_SPLIT,
    MANIFEST_KIND,
    PACKED,
    SEGDENSE,
    SPLITS,
    TRAIN_SPLIT,
    ModelReads,
    RecordLayout,
    split_uri,
)

log = logging.getLogger(__name__)

PROGRESS_EVERY_S = 10.0


class ConvertSettings(StrictModel):
    """How to convert: split, sharding, parallelism, compression."""

    eval_fraction: float = Field(default=0.1, ge=0.0, lt=1.0)
    split_key: str = "user_id"
    shards: int = Field(default=4, ge=1, le=99_999)
    workers: int = Field(default_factory=lambda: max(1, os.cpu_count() or 1), ge=1)
    compressor: Literal["auto", "isal", "zlib"] = "auto"  # auto: isal when installed
    compression_level: int | None = Field(default=None, ge=0, le=9)  # None: isal 1, zlib 6
    batch_rows: int = Field(default=256, ge=1)
    progress_bar: bool = False
    # Record layout (components.records.layout): segdense (interop) or packed for training,
    # keeping what the model of `trainer_config` reads (all values when no config is given).
    layout: Literal["segdense", "packed"] = "segdense"
    trainer_config: str | None = None
    compression: Literal["auto", "gzip", "none"] = "auto"  # auto: gzip for segdense, none for packed
    # The contract's value rules (components.common.contract), with validate's thresholds and overrides.
    check_values: bool = True  # False: `--skip-checks` (the input passed validate already)
    max_non_finite_share: float = Field(default=0.02, ge=0, le=1)
    severity: dict[str, Literal["error", "warning"]] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _level_fits_backend(self) -> ConvertSettings:
        if self.compressor == "isal" and self.compression_level is not None and self.compression_level > 3:
            raise ValueError(f"compression_level: isal levels are 0-3, got {self.compression_level}")
        return self

    def resolved_compression(self) -> tuple[str, int]:
        """(backend, level) this run uses."""
        backend = self.compressor
        if backend == "auto":  # isal when installed and the level is one of its own (0-3)
            fits = self.compression_level is None or self.compression_level <= 3
            backend = "isal" if fits and importlib.util.find_spec("isal") is not None else "zlib"
        if backend == "isal" and importlib.util.find_spec("isal") is None:
            raise ConfigError("compressor isal: the `isal` package is not installed (use zlib)")
        default = 1 if backend == "isal" else 6
        level = default if self.compression_level is None else self.compression_level
        return backend, level

    def record_layout(self, schema: Schema) -> RecordLayout:
        """The layout this run writes (packed: cut to the trainer config's truncation)."""
        if self.layout == SEGDENSE:
            if self.trainer_config is not None:
                raise ConfigError("trainer_config: only used with layout packed")
            return RecordLayout()
        reads = ModelReads.from_trainer_config(self.trainer_config) if self.trainer_config else ModelReads()
        try:
            return reads.layout(schema)
        except SchemaError as exc:
            raise ConfigError(f"{self.trainer_config}: {exc}") from None

    def container(self) -> str:
        """Shard compression, gzip or none (auto: none for packed, where gzip saves a few percent
        of the bytes but costs most of the read; docs/performance.md)."""
        if self.compression != "auto":
            return self.compression
        return "none" if self.layout == PACKED else "gzip"


@dataclass(frozen=True)
class ConvertResult:
    """What a conversion published: per split record counts, shard URIs and manifests."""

    out_uri: str
    records: dict[str, int]  # split -> record count
    shard_uris: dict[str, tuple[str, ...]]  # split -> shard URIs
    manifests: dict[str, Manifest]  # split -> manifest as written
    manifest_uris: dict[str, str]
    rows: int
    seconds: float

    @property
    def rows_per_s(self) -> float:
        return self.rows / max(self.seconds, 1e-9)


# --------------------------------------------------------------------------- workers


def _claim_loop(jobs: list[ShardJob], next_index: Any, rows_done: Any, stop: Any) -> list[ShardOutput]:
    """Take tasks off a shared counter until none are left (or another process failed)."""
    outputs = []

    def progress(rows: int) -> None:
        with rows_done.get_lock():
            rows_done.value += rows

    while not stop.value:
        with next_index.get_lock():
            index = next_index.value
            next_index.value += 1
        if index >= len(jobs):
            break
        outputs.append(convert_shard(jobs[index], progress))
    return outputs


def _worker_main(jobs, next_index, rows_done, stop, results) -> None:
    try:
        results.put((os.getpid(), "ok", _claim_loop(jobs, next_index, rows_done, stop)))
    except BaseException as exc:  # report every failure to the parent, then exit non-zero
        stop.value = 1
        error = exc if isinstance(exc, RecapError) else RuntimeError(f"{type(exc).__name__}: {exc}")
        results.put((os.getpid(), "error", error))
        raise SystemExit(1) from None


def _collect(children: list[Any], results: Any) -> list[ShardOutput]:
    """Wait for every child's outputs; a child that dies without reporting is an error, not a hang."""
    outputs: list[ShardOutput] = []
    pending = {child.pid: child for child in children}
    while pending:
        try:
            pid, kind, value = results.get(timeout=0.5)
        except queue.Empty:
            dead = [c for c in pending.values() if c.exitcode not in (None, 0)]
            if not dead:
                continue
            try:  # its last words may still be in the pipe
                pid, kind, value = results.get(timeout=2.0)
            except queue.Empty:
                raise DataError(
                    f"convert worker pid={dead[0].pid} died (exit code {dead[0].exitcode}) without a result"
                ) from None
        pending.pop(pid, None)
        if kind == "error":
            raise value
        outputs += value
    return outputs


def start_method() -> str:
    """`fork` (instant start) when nothing fork-unsafe runs here, else `spawn`.

    A forked child inherits only the forking thread. Live Python threads (a progress bar, a
    client pool) and TensorFlow's runtime would be left broken in it, so either one means
    spawn. BLAS, jemalloc and an unused torch are fork-aware. A spawned worker instead
    re-imports numpy/pyarrow (~0.5 CPU-s each).
    """
    if "tensorflow" in sys.modules or threading.active_count() > 1:
        return "spawn"
    return "fork" if "fork" in mp.get_all_start_methods() else "spawn"


def _run_jobs(jobs: list[ShardJob], workers: int, total_rows: int, show_bar: bool) -> list[ShardOutput]:
    method = start_method()
    log.debug("convert workers=%d start_method=%s", workers, method)
    ctx = mp.get_context(method)
    next_index, rows_done, stop = ctx.Value("q", 0), ctx.Value("q", 0), ctx.Value("b", 0)
    results = ctx.Queue()
    children = [
        ctx.Process(target=_worker_main, args=(jobs, next_index, rows_done, stop, results), daemon=True)
        for _ in range(min(workers, len(jobs)) - 1)
    ]
    for child in children:
        child.start()
    reporter = _ProgressReporter(rows_done, total_rows, show_bar)
    reporter.start()
    outputs: list[ShardOutput] = []
    try:
        try:
            outputs += _claim_loop(jobs, next_index, rows_done, stop)
        except BaseException:
            stop.value = 1
            raise
        outputs += _collect(children, results)
        for child in children:
            child.join()
    finally:
        reporter.stop()
        for child in children:
            if child.is_alive():
                child.terminate()
                child.join()
    return sorted(outputs, key=lambda o: o.index)


class _ProgressReporter:
    """Progress bar and periodic `rows=... rows_per_s=...` lines from the shared row counter."""

    def __init__(self, rows_done: Any, total_rows: int, show_bar: bool) -> None:
        self.rows_done, self.total = rows_done, total_rows
        self.show_bar = show_bar
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="convert-progress", daemon=True)
        self.throughput = Throughput()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _loop(self) -> None:
        bar = None
        if self.show_bar:
            from tqdm import tqdm

            bar = tqdm(total=self.total, unit="rows", desc="convert", smoothing=0.1)
        last_log = time.perf_counter()
        shown = 0
        while not self._stop.wait(0.5):
            done = self.rows_done.value
            if bar is not None:
                bar.update(done - shown)
            shown = done
            if time.perf_counter() - last_log >= PROGRESS_EVERY_S:
                last_log = time.perf_counter()
                rate = done / self.throughput.seconds
                log.info("convert %s", format_metrics(rows=done, total_rows=self.total, rows_per_s=rate))
        if bar is not None:
            bar.update(self.rows_done.value - shown)
            bar.close()


# --------------------------------------------------------------------------- the step


def clear_split(directory: str) -> None:
    """Remove a split's output: the manifest first, so a half-deleted split is never trusted."""
    storage.delete(manifest_uri(directory))
    storage.delete_prefix(directory)


def run(input_uri: str, schema: Schema, out_uri: str, settings: ConvertSettings) -> ConvertResult:
    """Convert raw Parquet at `input_uri` into `<out_uri>/{train,eval}/` TFRecord shards with manifests."""
    start = time.perf_counter()
    out_uri = out_uri.rstrip("/")
    split_spec = plan.resolve_split_column(schema, settings.split_key)
    inputs = plan.list_input_files(input_uri)
    rows = plan.file_rows(inputs, schema)
    files = inputs.files
    layout, container = settings.record_layout(schema), settings.container()
    tasks = plan.plan_tasks(files, rows, settings.shards, out_uri, container)
    total = sum(rows)
    backend, level = settings.resolved_compression()
    log.info("convert %s", format_metrics(input=input_uri, files=len(files), rows=total, shards=settings.shards,
                                          workers=settings.workers, layout=layout.describe(),
                                          compressor=f"{backend}-{level}" if container == "gzip" else "none"))
    for split in SPLITS:
        clear_split(split_uri(out_uri, split))
    checks = ValueChecks(settings.check_values, tuple(sorted(settings.severity.items())))
    jobs = [
        ShardJob(task, schema, split_spec.column, settings.eval_fraction, backend, level, settings.batch_rows,
                 layout, container, checks)
        for task in tasks
    ]
    try:
        outputs = _run_jobs(jobs, settings.workers, total, settings.progress_bar)
        check_non_finite(outputs, schema, settings.max_non_finite_share)
    except BaseException:
        for split in SPLITS:  # no manifest was written; leave no unlisted shards behind either
            clear_split(split_uri(out_uri, split))
        raise
    return _publish(out_uri, input_uri, schema, settings, outputs, total, time.perf_counter() - start, layout)


def check_non_finite(outputs: list[ShardOutput], schema: Schema, max_share: float) -> None:
    """NaN/inf share per continuous element over the whole input, judged as validate judges it."""
    totals: dict[str, NonFinite] = {}
    for output in outputs:
        for column, tally in output.non_finite.items():
            if column in totals:
                totals[column].merge(tally)
            else:
                totals[column] = NonFinite(tally.counts.copy(), tally.rows, tally.first)
    for spec in schema.features:
        tally = totals.get(spec.column)
        if tally is None or not tally.rows:
            continue
        share = tally.counts / tally.rows
        allowed = contract.allowed_non_finite_share(spec.role, max_share)
        flagged = np.flatnonzero(share > allowed)
        if len(flagged):
            element = int(flagged[np.argmax(share[flagged])])
            uri, row = tally.first or ("?", -1)
            raise DataError(f"{uri}: row {row}: column {spec.column!r} element {element} is NaN/inf in "
                            f"{share[element]:.2%} of rows, above max_non_finite_share {allowed:g} [non_finite]")


def _publish(out_uri: str, input_uri: str, schema: Schema, settings: ConvertSettings,
             outputs: list[ShardOutput], total: int, seconds: float,
             layout: RecordLayout | None = None) -> ConvertResult:
    layout = layout or RecordLayout()
    container = settings.container()
    records, shard_uris, manifests, manifest_uris = {}, {}, {}, {}
    for split in SPLITS:
        directory = split_uri(out_uri, split)
        entries: list[ManifestFile] = [o.files[split] for o in outputs]
        extra = {
            "split": split, "schema": schema.name, "eval_fraction": settings.eval_fraction,
            "split_key": settings.split_key, "compression": COMPRESSIONS[container] or "NONE", "source": input_uri,
            "shards": settings.shards, "compressor": "-".join(map(str, settings.resolved_compression())),
            **layout.to_extra(),
        }
        manifests[split] = write_manifest(directory, MANIFEST_KIND, layout.hash(schema), entries, extra)
        manifest_uris[split] = manifest_uri(directory)
        records[split] = manifests[split].total_records
        shard_uris[split] = tuple(manifests[split].uris(directory))
    rate = total / max(seconds, 1e-9)
    log.info("convert done %s", format_metrics(rows=total, train=records[TRAIN_SPLIT], eval=records[EVAL_SPLIT],
                                               seconds=seconds, rows_per_s=rate))
    return ConvertResult(out_uri, records, shard_uris, manifests, manifest_uris, total, seconds)
