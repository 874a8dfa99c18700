"""tf.data service benchmark, in one run: what input costs the trainer process with and without
the service, and how many rows the service delivers with 1 and 2 dataset workers.

Prod-shaped rows (configs/schema/prod.yaml), gzip TFRecords from our converter, per-rank batch 128,
the trainer's own code on both sides (`components.records.reader.read_batches` in process;
`components.records.service` through a dispatcher and `recap data-service worker` processes
started by the local launcher's `data_service`). The consumer takes RecapBatches and does
nothing else. Each consumer runs in a child process of its own:
- trainer-side CPU: user + system CPU seconds of the consumer process (all its threads, so
  tf.data's reading and parsing threads count in process) per 1,000 rows, over the timed read
  after a warm-up;
- delivered rows/s: rows the consumer received per wall second.

What it can show: the CPU the input takes away from a trainer process, which is what the
service moves to other machines. What it cannot: the rows/s of a cluster. Here the dispatcher,
the workers and the consumer share one 2-core machine with other jobs, so 2 workers cannot
show the speed-up they give on their own CPUs, and the service's rows/s are a floor.

`python -m benchmarks.bench_data_service` prints a markdown table and writes
results/data_service.md.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULT = HERE / "results" / "data_service.md"
BATCH = 128


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def child_consume(split: str, dispatcher: str, rows: int, warmup: int) -> dict:
    from components.common.schema import load_schema
    from components.records.reader import ReaderOptions, read_batches

    schema = load_schema("prod")
    options = ReaderOptions(batch_size=BATCH, shuffle=True, repeat=True, drop_remainder=True)
    if dispatcher:
        from components.records.service import consume, register, service_dataset

        dataset = service_dataset(split, schema, options, global_batch_size=BATCH)
        batches = consume(register(dispatcher, dataset, 0, 120.0), dataset.element_spec, schema)
    else:
        batches = read_batches(split, schema, options)
    for _ in range(warmup):
        next(batches)
    count, cpu, start = 0, _cpu_s(), time.perf_counter()
    while count < rows:
        count += next(batches).batch_size
    seconds, cpu = time.perf_counter() - start, _cpu_s() - cpu
    return {"rows": count, "rows_per_s": count / seconds, "cpu_s_per_1000": 1000 * cpu / count}


def run_child(*args: str) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "2", "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-m", "benchmarks.bench_data_service", "--child", *args], cwd=ROOT,
                          env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"child {args} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def make_split(rows: int) -> str:
    from components.common.schema import load_schema
    from components.convert.convert import ConvertSettings
    from components.convert.convert import run as convert
    from components.datagen import generate

    schema = load_schema("prod")
    root = Path(tempfile.mkdtemp(prefix="bench-data-service-"))
    generate(schema, str(root / "raw"), rows=rows, files=2, seed=0)
    convert(str(root / "raw"), schema, str(root / "data"), ConvertSettings(shards=4, workers=2, eval_fraction=0.0))
    return str(root / "data" / "train")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", nargs="*")
    parser.add_argument("--data-rows", type=int, default=2000, help="prod-shaped rows converted (read repeatedly)")
    parser.add_argument("--read-rows", type=int, default=3000, help="rows each consumer times")
    args = parser.parse_args()
    if args.child:
        split, dispatcher, rows = args.child
        print(json.dumps(child_consume(split, dispatcher, int(rows), warmup=3)))
        return

    from components.launch.local_service import data_service

    started = time.perf_counter()
    split = make_split(args.data_rows)
    results = {"in process": run_child(split, "", str(args.read_rows))}
    for workers in (1, 2):
        with data_service(workers, f"bench-{workers}") as service:
            results[f"service, {workers} worker{'s' if workers > 1 else ''}"] = run_child(
                split, service.dispatcher, str(args.read_rows))
    base = results["in process"]["cpu_s_per_1000"]
    lines = [
        "## tf.data service: trainer-side input CPU and delivered rows (prod-shaped rows, batch 128)",
        "",
        f"Data: {args.data_rows} prod-shaped rows in 4 gzip shards, read repeatedly; each consumer times "
        f"{args.read_rows} rows after 3 warm-up batches, in a process of its own, doing nothing with them. "
        "One 2-core machine shared by the dispatcher, the workers, the consumer and other jobs.",
        "",
        "| input | trainer-process CPU s / 1,000 rows | share of in-process | delivered rows/s |",
        "|---|---|---|---|",
    ]
    for name, result in results.items():
        lines.append(f"| {name} | {result['cpu_s_per_1000']:.3f} | {result['cpu_s_per_1000'] / base:.0%} "
                     f"| {result['rows_per_s']:.0f} |")
    lines += ["", f"Run time {time.perf_counter() - started:.0f} s. Target: trainer-side CPU with the service "
              "<= 25% of in-process reading. Rows/s with 2 workers is not a scaling figure here: both "
              "workers share the same 2 cores with the consumer."]
    text = "\n".join(lines) + "\n"
    RESULT.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
