"""Evaluation benchmark: streaming metrics vs exact/collect-everything baselines, in one run.

1. Metric core, one task, 1M examples: our streaming logit histogram vs scikit-learn's exact
   AUROC/AP/log loss (needs every prediction in memory) and torchmetrics' binned AUROC
   (`thresholds=`), for throughput and AUROC error against the exact value.
2. End to end on a model trained by the real trainer: `components.evaluate.run` vs a naive
   evaluator that keeps every prediction and calls scikit-learn, on an eval split of N and
   10N examples. Each run is a fresh child process reporting its own peak RSS, so the memory
   growth with 10x the data is measured, not inferred.

`python -m benchmarks.bench_evaluate` prints a markdown table and writes results/evaluate.md.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULT = HERE / "results" / "evaluate.md"


# --------------------------------------------------------------------------- 1. metric core


def _synthetic(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    z = rng.normal(size=n)
    y = (rng.random(n) < 1 / (1 + np.exp(-(-2.0 + 1.5 * z)))).astype(np.float64)
    p = 1 / (1 + np.exp(-(-2.0 + 1.5 * z + rng.normal(scale=0.5, size=n))))
    return p, y


def _timed_peak(fn):
    tracemalloc.start()
    start = time.perf_counter()
    value = fn()
    seconds = time.perf_counter() - start
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return value, seconds, peak


def bench_metric_core(n: int, batch: int = 4096) -> list[dict]:
    from sklearn.metrics import average_precision_score, log_loss, roc_auc_score

    from components.metrics.binary import BinaryMetricAccumulator, clip_probabilities

    p, y = _synthetic(n)
    batches = [(p[i:i + batch], y[i:i + batch]) for i in range(0, n, batch)]
    exact = roc_auc_score(y, p)
    rows = []

    def ours():
        acc = BinaryMetricAccumulator("task")
        for pb, yb in batches:
            acc.update(pb, yb)
        return acc.compute().auroc

    def sklearn_exact():
        # A streaming caller must keep every batch, then concatenate: that is the memory cost.
        kept_p, kept_y = [], []
        for pb, yb in batches:
            kept_p.append(pb.copy())
            kept_y.append(yb.copy())
        pp, yy = np.concatenate(kept_p), np.concatenate(kept_y)
        auroc = roc_auc_score(yy, pp)
        average_precision_score(yy, pp)
        log_loss(yy, clip_probabilities(pp))
        return auroc

    def torchmetrics_binned(thresholds: int):
        import torch
        from torchmetrics.classification import BinaryAUROC

        def fn():
            metric = BinaryAUROC(thresholds=thresholds)
            for pb, yb in batches:
                metric.update(torch.from_numpy(pb), torch.from_numpy(yb).long())
            return float(metric.compute())
        return fn

    for name, fn in [("ours: streaming logit histogram (32768 bins)", ours),
                     ("scikit-learn exact (keep all, sort)", sklearn_exact),
                     ("torchmetrics 1.0 BinaryAUROC(thresholds=1000)", torchmetrics_binned(1000))]:
        auroc, seconds, peak = _timed_peak(fn)
        traced = not name.startswith("torchmetrics")  # tracemalloc does not see torch's allocator
        rows.append({"name": name, "examples_per_s": n / seconds, "peak_mb": peak / 1e6 if traced else None,
                     "auroc_error": abs(auroc - exact)})
        _note(f"core {name}: {seconds:.1f}s")
    return rows


def _note(message: str) -> None:
    print(f"[bench_evaluate {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- 2. end to end


def _child(mode: str, model: str, data: str, out: str) -> None:
    """One evaluation in this (fresh) process; prints a JSON line with its peak RSS."""
    from components.common.logs import setup_logging

    setup_logging("WARNING")
    start = time.perf_counter()
    if mode == "ours":
        from components.evaluate import run
        from components.evaluate.config import EvaluateConfig

        result = run(model, data, out, EvaluateConfig())
        examples, auroc, loop_rate = result.examples, result.task("is_favorited").auroc, result.examples_per_s
    else:
        auroc, examples, loop_rate = _naive_evaluate(model, data)
    seconds = time.perf_counter() - start
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"examples": examples, "seconds": seconds, "loop_examples_per_s": loop_rate,
                      "peak_rss_mb": peak_mb, "auroc": auroc}))


def _naive_evaluate(model_uri: str, data_uri: str) -> tuple[float, int, float]:
    """The obvious evaluator: keep every prediction, then exact scikit-learn metrics per task."""
    import torch
    from sklearn.metrics import average_precision_score, log_loss, roc_auc_score

    from components.exported_model.model_dir import load_exported_model
    from components.records.reader import ReaderOptions, read_batches

    exported = load_exported_model(model_uri)
    start = time.perf_counter()  # like `run`'s rate: reading, the model and the metrics
    predictions, labels, weights = [], [], []
    with torch.inference_mode():
        for batch in read_batches(data_uri, exported.schema, ReaderOptions(batch_size=1024, shuffle=False,
                                                                             num_parallel_reads=2)):
            predictions.append(exported.model(batch)["calibrated_probabilities"].double().numpy())
            labels.append(batch.labels.numpy())
            weights.append(batch.weights.numpy())
    p, y, w = np.concatenate(predictions), np.concatenate(labels), np.concatenate(weights)
    aurocs = []
    for t in range(p.shape[1]):
        if 0 < y[:, t].sum() < len(y):
            aurocs.append(roc_auc_score(y[:, t], p[:, t], sample_weight=w[:, t]))
            average_precision_score(y[:, t], p[:, t], sample_weight=w[:, t])
            log_loss(y[:, t], np.clip(p[:, t], 1e-7, 1 - 1e-7), sample_weight=w[:, t])
    return aurocs[0], len(p), len(p) / (time.perf_counter() - start)


def _spawn(mode: str, model: str, data: str, out: str) -> dict:
    done = subprocess.run([sys.executable, "-m", "benchmarks.bench_evaluate", "--child", mode, model, data, out],
                          cwd=ROOT, capture_output=True, text=True, timeout=900)
    if done.returncode != 0:
        raise RuntimeError(f"child {mode} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def bench_end_to_end(small_eval: int, work: Path) -> list[dict]:
    from components.common.schema import load_schema
    from components.convert.convert import ConvertSettings
    from components.convert.convert import run as convert
    from components.datagen.generate import generate
    from components.trainer_command.torchrun import torchrun_command

    schema = load_schema("local")
    splits = {}
    for name, eval_rows in (("N", small_eval), ("10N", 10 * small_eval)):
        raw, data = work / f"raw_{name}", work / f"data_{name}"
        generate(schema, str(raw), rows=2 * eval_rows, files=2, seed=7)
        convert(str(raw), schema, str(data), ConvertSettings(shards=2, workers=2, eval_fraction=0.5))
        splits[name] = data
        _note(f"data {name} ready")
    command = torchrun_command(str(ROOT / "configs" / "local.yaml"), overrides={
        "train_data": str(splits["N"] / "train"), "validation_data": str(splits["N"] / "eval"),
        "save_dir": str(work / "train"), "num_train_steps": 100})
    subprocess.run(command, cwd=ROOT, check=True, capture_output=True, timeout=600)
    _note("model trained")
    model = str(work / "train" / "model")
    rows = []
    for name, data in splits.items():  # alternate evaluators so machine noise hits both alike
        for mode in ("ours", "naive"):
            measured = _spawn(mode, model, str(data / "eval"), str(work / f"out_{mode}_{name}"))
            rows.append({"mode": mode, "size": name, **measured})
            _note(f"{mode} {name}: {measured}")
    return rows


# --------------------------------------------------------------------------- table


def render(core: list[dict], e2e: list[dict], core_n: int) -> str:
    base = next(r for r in core if r["name"].startswith("scikit-learn"))
    lines = [
        "## Evaluation",
        "",
        f"Metric core, one task, {core_n:,} examples in batches of 4096 (peak = Python/numpy heap "
        "via tracemalloc, including kept predictions):",
        "",
        "| metric implementation | examples/s | vs scikit-learn | peak MB | AUROC error vs exact |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in core:
        peak = "n/a (torch heap)" if r["peak_mb"] is None else f"{r['peak_mb']:.1f}"
        lines.append(f"| {r['name']} | {r['examples_per_s']:,.0f} | "
                     f"{r['examples_per_s'] / base['examples_per_s']:.2f}x | {peak} | "
                     f"{r['auroc_error']:.1e} |")
    lines += [
        "",
        "End to end (`components.evaluate.run` on a model from the trainer, local schema, each run a "
        "fresh process; peak = process max RSS, which includes torch + TensorFlow):",
        "",
        "| evaluator | eval examples | loop examples/s | wall s | peak RSS MB | RSS growth N -> 10N |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for mode, label in (("ours", "ours: streaming (histograms + GAUC sample)"),
                        ("naive", "baseline: keep all predictions + scikit-learn")):
        small = next(r for r in e2e if r["mode"] == mode and r["size"] == "N")
        large = next(r for r in e2e if r["mode"] == mode and r["size"] == "10N")
        growth = large["peak_rss_mb"] / small["peak_rss_mb"] - 1
        for r in (small, large):
            lines.append(f"| {label} | {r['examples']:,} | {r['loop_examples_per_s']:,.0f} | {r['seconds']:.1f} | "
                         f"{r['peak_rss_mb']:,.0f} | {f'{growth:+.1%}' if r is large else ''} |")
    ours_large = next(r for r in e2e if r["mode"] == "ours" and r["size"] == "10N")
    naive_large = next(r for r in e2e if r["mode"] == "naive" and r["size"] == "10N")
    ours_core = next(r for r in core if r["name"].startswith("ours"))
    tasks = 10
    metric_share = ours_large["loop_examples_per_s"] * tasks / ours_core["examples_per_s"]
    lines += [
        "",
        f"Streaming metrics for {tasks} tasks cost ~{metric_share:.1%} of our eval loop "
        "(core rate above vs loop rate at 10N); the rest is reading and the model's forward pass.",
        f"Loop throughput ours / baseline at 10N: "
        f"{ours_large['loop_examples_per_s'] / naive_large['loop_examples_per_s']:.2f}x "
        "(single runs on a shared machine: end-to-end rates swing several-fold between runs; loop = reading + model + metrics, after the model is loaded; wall includes process and "
        "TensorFlow start-up). "
        "Our metric state is fixed (~1.5 MB per task at 32768 bins) plus the GAUC sample "
        "(24 bytes per kept impression, capped by `ranking.gauc_max_examples`).",
    ]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", nargs=4, metavar=("MODE", "MODEL", "DATA", "OUT"), help=argparse.SUPPRESS)
    parser.add_argument("--core-examples", type=int, default=300_000)
    parser.add_argument("--eval-examples", type=int, default=10_000, help="N; the large split has 10N")
    args = parser.parse_args()
    if args.child:
        _child(*args.child)
        return 0
    core = bench_metric_core(args.core_examples)
    with tempfile.TemporaryDirectory(prefix="bench-evaluate-") as tmp:
        e2e = bench_end_to_end(args.eval_examples, Path(tmp))
    table = render(core, e2e, args.core_examples)
    print(table)
    RESULT.parent.mkdir(parents=True, exist_ok=True)
    RESULT.write_text(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
