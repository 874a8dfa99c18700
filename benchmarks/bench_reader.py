"""Reader rows per layout (prod-shaped rows, the prod model's features), in one run.

The same Parquet rows are converted into each layout; each split is then read by our reader
(`read_batches` with the prod model's `reads`, as the trainer reads it: verification, tf.data,
torch batches) for a fixed number of rows after a warm-up. Per layout: wall rows/s, rows per
CPU-second of this process (every TensorFlow and fetch thread included), bytes per row on
storage (from the manifest) and handed to the device (the batch's tensors). The packed split
is also read through the GCS emulator (a local HTTP server on this machine, sharing its CPUs)
against the same split on local disk, alternating, best of the repeats.

The reader rows of the convert benchmark, kept in their own module so they run alone:
`python -m benchmarks.bench_reader [--rows N]` writes results/reader.md (`make bench` runs it).
"""

from __future__ import annotations

import argparse
import itertools
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULT = HERE / "results" / "reader.md"
LAYOUTS = (  # name, convert settings, reader reads the model's features only?
    ("segdense, gzip, every feature parsed (before)", {"layout": "segdense"}, False),
    ("segdense, gzip, model's features parsed", {"layout": "segdense"}, True),
    ("packed, gzip", {"layout": "packed", "compression": "gzip"}, True),
    ("packed, none, through tf.data (decode_raw at fixed offsets)", {"layout": "packed", "compression": "none"}, True),
    ("packed, none, numpy frames (the packed default)", {"layout": "packed", "compression": "none"}, True),
)
TF_DATA_PACKED = LAYOUTS[3][0]  # read with the frame path switched off, for the side-by-side ratio


def batch_bytes(batch) -> int:
    tensors = [batch.continuous, batch.binary, batch.discrete, batch.labels, batch.weights,
               batch.sparse_features.values(), batch.sparse_features.lengths(), *batch.embeddings.values()]
    return sum(t.numel() * t.element_size() for t in tensors)


def _own_cpu() -> float:
    """CPU seconds of this process only: never the GCS emulator's, though it is our child process."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def read_rate(split: str, schema, reads, rows: int, batch_size: int = 512, frames: bool = True):
    """(Measured, bytes per row to the device) of our reader over `split`.

    Local shards are verified (sha256) once per read, before the first batch: in the warm-up, so not
    in this rate (see verify_rate). gs:// shards are downloaded and verified again every epoch, so a
    gs:// rate over one epoch's rows includes that work.
    """
    from benchmarks.bench_convert import Measured
    from components.records.reader import ReaderOptions, read_batches

    _cpu = _own_cpu

    batches = read_batches(split, schema, ReaderOptions(batch_size=batch_size, repeat=True, reads=reads))
    if not frames:
        from components.records import reader

        real, reader._Layout.reads_frames = reader._Layout.reads_frames, lambda self, compression: False
        try:
            first = next(batches)  # the generator picks its path on the first batch
        finally:
            reader._Layout.reads_frames = real
        batches = itertools.chain([first], batches)
    device = 0
    for _ in range(3):  # warm up: graph tracing, thread pools, first shards
        device = batch_bytes(next(batches)) / batch_size
    cpu, start, seen = _cpu(), time.perf_counter(), 0
    while seen < rows:
        seen += next(batches).batch_size
    measured = Measured(seen, time.perf_counter() - start, _cpu() - cpu)
    if hasattr(batches, "close"):
        batches.close()
    return measured, device


def verify_rate(split: str) -> float:
    """Rows per CPU-second of verifying a local split's shards against its manifest (size, sha256)."""
    from components.common import storage
    from components.common.manifest import read_manifest, verify_file

    manifest, directory = read_manifest(split)
    cpu = _own_cpu()
    for entry in manifest.files:
        verify_file(storage.join(directory, entry.path), entry)
    return manifest.total_records / max(_own_cpu() - cpu, 1e-9)


def one_pass(cpu_rate: float, verify: float) -> float:
    """Rows per CPU-second of a read that verifies every shard once (a single pass over the data)."""
    return 1.0 / (1.0 / cpu_rate + 1.0 / verify)


def storage_bytes_per_row(split: str) -> float:
    from components.common.manifest import read_manifest

    manifest, _ = read_manifest(split)
    return sum(f.bytes for f in manifest.files) / max(1, manifest.total_records)


def start_emulator() -> tuple[subprocess.Popen, str]:
    from components.launch.local import free_port

    port = free_port()
    exe = Path(sys.executable).parent / "gcp-storage-emulator"
    proc = subprocess.Popen([str(exe), "start", "--host", "127.0.0.1", "--port", str(port), "--in-memory", "-q"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(f"{url}/storage/v1/b", timeout=1)  # noqa: S310 - loopback only
            break
        except urllib.error.HTTPError:
            break
        except OSError:
            if time.monotonic() > deadline:
                proc.kill()
                raise
            time.sleep(0.1)
    return proc, url


def measure_layouts(raw: Path, root: Path, rows: int, repeats: int, gcs: bool = True) -> list[str]:
    """Markdown rows of the reader-per-layout table."""
    from components.common import storage
    from components.common.schema import load_schema
    from components.convert import ConvertSettings, run
    from components.records.layout import ModelReads

    schema = load_schema("prod")
    config = str(HERE.parent / "configs" / "prod.yaml")
    reads = ModelReads.from_trainer_config(config)
    splits = {}
    for index, (name, settings, _) in enumerate(LAYOUTS):
        out = root / f"layout{index}"
        same = next(i for i, (_, other, _) in enumerate(LAYOUTS) if other == settings)
        if same < index:  # the same shards, read another way
            out = root / f"layout{same}"
        else:
            extra = {"trainer_config": config} if settings["layout"] == "packed" else {}
            run(str(raw), schema, str(out), ConvertSettings(shards=4, workers=1, eval_fraction=0.0, **settings, **extra))
        splits[name] = str(out / "train")
    results: dict[str, list] = {}
    verifies: dict[str, list[float]] = {}
    gcs_rows: dict[str, list] = {"local": [], "gs://": []}
    emulator = None
    packed = splits[LAYOUTS[-1][0]]
    try:
        if gcs:
            emulator, url = start_emulator()
            os.environ["STORAGE_EMULATOR_HOST"] = url
            storage._clients.clear()
            storage.gcs_client().create_bucket("bench-reader")
            for path in sorted(Path(packed).iterdir()):
                storage.upload(str(path), f"gs://bench-reader/train/{path.name}")
        for _ in range(repeats):
            for name, _, model_only in LAYOUTS:
                results.setdefault(name, []).append(read_rate(splits[name], schema, reads if model_only else None, rows,
                                                              frames=name != TF_DATA_PACKED))
                verifies.setdefault(name, []).append(verify_rate(splits[name]))
            if gcs:
                gcs_rows["gs://"].append(read_rate("gs://bench-reader/train", schema, reads, rows))
                gcs_rows["local"].append(read_rate(packed, schema, reads, rows))
    finally:
        if emulator is not None:
            emulator.terminate()
            emulator.wait(timeout=10)
    lines = []
    before = max(results[LAYOUTS[0][0]], key=lambda r: r[0].cpu_rate)[0]
    for name, _, _ in LAYOUTS:
        measured, device = max(results[name], key=lambda r: r[0].cpu_rate)
        verify = max(verifies[name])
        target = ">= 50,000 one pass" if name == LAYOUTS[-1][0] else ""
        lines.append(f"| {name} | {measured.rate:,.0f} | {measured.cpu_rate:,.0f} | "
                     f"{measured.cpu_rate / before.cpu_rate:.1f}x | {verify:,.0f} | "
                     f"{one_pass(measured.cpu_rate, verify):,.0f} | {storage_bytes_per_row(splits[name]):,.0f} | "
                     f"{device:,.0f} | {target} |")
    if gcs:
        # Against the local rate of the same rounds, verification included on both sides: every
        # gs:// epoch downloads and verifies its shards again, a local read verifies once per read.
        local = max(gcs_rows["local"], key=lambda r: r[0].cpu_rate)[0]
        remote = max(gcs_rows["gs://"], key=lambda r: r[0].cpu_rate)[0]
        local_wall = max(gcs_rows["local"], key=lambda r: r[0].rate)[0]
        remote_wall = max(gcs_rows["gs://"], key=lambda r: r[0].rate)[0]
        local_pass = one_pass(local.cpu_rate, max(verifies[LAYOUTS[-1][0]]))
        lines.append(f"| packed, none, from gs:// (GCS emulator) | {remote_wall.rate:,.0f} "
                     f"({remote_wall.rate / local_wall.rate:.0%} of local's {local_wall.rate:,.0f}) | "
                     f"{remote.cpu_rate:,.0f} (download and verification included) | | | "
                     f"**{remote.cpu_rate / local_pass:.0%}** of local's {local_pass:,.0f} | | | "
                     f">= 80% of local (judged on rows per CPU-s of the reader's process) |")
    return lines


def table(lines: list[str], rows: int, repeats: int) -> str:
    return "\n".join([
        "## Reader per layout (prod-shaped rows, the prod model's features)",
        "",
        f"Our reader (`read_batches`, batch 512, shuffled, shards verified) over {rows} rows per run after "
        f"3 warm-up batches, best of {repeats} interleaved runs; the same random prod-shaped rows converted "
        "into each layout (4 shards). CPU = this process's user+system time, every reader thread (TensorFlow's, "
        "the frame reader's, the fetchers) included; 'to the device' = bytes of the batch's tensors per row. "
        "The two uncompressed packed rows read the same shards through tf.data and through numpy frames, "
        "side by side. A local read verifies each shard "
        "(size, sha256) once, before its first batch, so the timed rows after the warm-up do not pay for it: "
        "'verification alone' measures that cost and 'one pass' adds it back, as a single pass over a "
        "large dataset pays it. The gs:// row reads the packed split in place through the GCS emulator (a "
        "ranged GET per 8 MiB block, each checked against the manifest's block sha256 before use), so its "
        "rows per CPU-s include the transfer and the verification. The target is judged on the reader process's rows per CPU-second against local's one-pass "
        "rate: the emulator is a Python HTTP server sharing these 2 cores, standing in for GCS servers "
        "whose CPU is not ours, so the wall rate mostly measures the emulator (wall rates are shown too). "
        f"{platform.machine()}, {os.cpu_count()} cores shared with other jobs (load average at the end "
        f"{os.getloadavg()[0]:.1f}).",
        "",
        "| layout | rows/s (wall) | rows per CPU-s, shards verified already | vs before | verification alone, rows "
        "per CPU-s | rows per CPU-s, one pass verifying every shard | bytes/row on storage "
        "| bytes/row to the device | target |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
        *lines,
        "",
        "`python -m benchmarks.bench_reader` (a few minutes).",
    ]) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=12000, help="rows converted, and read per run")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--no-gcs", action="store_true")
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from benchmarks.bench_convert import write_prod_rows
    from components.common.schema import load_schema

    with tempfile.TemporaryDirectory(prefix="bench-reader-") as tmp:
        root = Path(tmp)
        (root / "raw").mkdir()
        write_prod_rows(load_schema("prod"), root / "raw" / "part-00000.parquet", args.rows)
        text = table(measure_layouts(root / "raw", root, args.rows, args.repeats, not args.no_gcs),
                     args.rows, args.repeats)
    print(text)
    RESULT.parent.mkdir(parents=True, exist_ok=True)
    RESULT.write_text(text)


if __name__ == "__main__":
    main()
