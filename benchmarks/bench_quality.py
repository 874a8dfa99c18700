"""Model quality benchmark: the Heavy Ranker vs logistic regression and LightGBM, against the oracle.

Per seed, on rows from the project's generator (local schema):
1. generate `--rows` rows, convert them with the split under test (`--split-key`, 10% eval),
2. the Heavy Ranker: `recap train` with `--config` (the bundled configs/local.yaml by default)
   for `--epochs` passes over the training split (default one, as configs/local.yaml does at
   `make run`'s 200k rows; the cosine schedule is stretched to match), then `components.evaluate.run`,
3. logistic regression (standardized features, no IDs) and LightGBM (one binary model per task,
   train-only out-of-fold target encodings of user and author, early stopping on a validation
   part carved from the training rows by the same split key), on the same features the ranker
   reads (sign*log1p of the continuous values, binary values, TwHIN embeddings),
4. the oracle under the same protocol (components.datagen.eval_oracle),
and scores every model on the same eval rows with the same metric core. Each model runs in its
own child process, so wall time and peak RSS (the child's own max RSS, torch/TensorFlow
included for the ranker) are its alone. The ranker's time is training plus evaluation; its
data preparation (convert) is shown apart, the baselines' includes reading the Parquet.

What it can show: per task AUROC, RCE, calibration and both lifts vs the oracle, models side
by side on identical rows. What it cannot: anything about prod-scale data or the real
distribution; the generator plants linear-in-features logits plus per-ID effects, a shape
that favours linear models, and the numbers move a few points between seeds.

`python -m benchmarks.bench_quality --rows 200000 --seeds 1 2` writes results/quality.md.
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
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULT = HERE / "results" / "quality.md"
MIN_POSITIVES = 200
MODELS = ("ranker", "logistic_regression", "lightgbm")


# --------------------------------------------------------------------------- features (baselines)


def _load_split(raw: str, split_key: str, eval_fraction: float) -> dict[str, Any]:
    """Feature matrix, labels, IDs and the eval mask of the raw rows, in the ranker's task order."""
    import pyarrow.parquet as pq

    from components.common.raw_inputs import list_raw_inputs
    from components.common.schema import Role, load_schema
    from components.convert.plan import eval_mask, resolve_split_column
    from components.datagen.rows import signed_log1p

    schema = load_schema("local")
    table = pq.read_table(list(list_raw_inputs(raw).files))

    def column(name: str) -> np.ndarray:
        c = table.column(name).combine_chunks()
        return c.flatten().to_numpy().reshape(len(c), -1) if hasattr(c.type, "list_size") else c.to_numpy()

    parts = [signed_log1p(column(schema.group(Role.CONTINUOUS).column).astype(np.float32)),
             column(schema.group(Role.BINARY).column).astype(np.float32)]
    parts += [column(spec.column).astype(np.float32) for spec in schema.embeddings]
    key = column(resolve_split_column(schema, split_key).column).astype(np.int64)
    return {
        "x": np.concatenate(parts, axis=1), "tasks": schema.task_names,
        "y": np.stack([column(t) for t in schema.task_names], axis=1).astype(np.float64),
        "user": column("user_id"), "author": column("author_id"), "key": key,
        "eval": eval_mask(key, eval_fraction),
    }


def _target_encoding(ids: np.ndarray, y: np.ndarray, fit: np.ndarray, apply: np.ndarray,
                     prior_rows: float = 50.0) -> np.ndarray:
    """Smoothed mean label per ID learnt on `fit` rows, for the `apply` rows (unseen IDs: the prior)."""
    uniq, inverse = np.unique(ids, return_inverse=True)
    prior = y[fit].mean()
    sums = np.bincount(inverse[fit], weights=y[fit], minlength=len(uniq))
    counts = np.bincount(inverse[fit], minlength=len(uniq))
    encoded = (sums + prior_rows * prior) / (counts + prior_rows)
    return np.log(encoded[inverse[apply]] / (1 - encoded[inverse[apply]]))


def _oof_encodings(data: dict[str, Any], task: int, train: np.ndarray, folds: int = 5) -> np.ndarray:
    """[rows, 2] user and author encodings: out-of-fold on training rows, full-train elsewhere."""
    y = data["y"][:, task]
    out = np.zeros((len(y), 2))
    fold = np.where(train, np.random.default_rng(task).integers(0, folds, len(y)), -1)
    for j, ids in enumerate((data["user"], data["author"])):
        out[~train, j] = _target_encoding(ids, y, train, ~train)
        for f in range(folds):
            rows = fold == f
            out[rows, j] = _target_encoding(ids, y, train & ~rows, rows)
    return out


def _score(data: dict[str, Any], predictions: np.ndarray) -> dict[str, Any]:
    from components.metrics.binary import BinaryMetricAccumulator, finite_or_none

    ev = data["eval"]
    tasks = {}
    for index, task in enumerate(data["tasks"]):
        acc = BinaryMetricAccumulator(task)
        acc.update(predictions[:, index], data["y"][ev, index])
        m = acc.compute()
        tasks[task] = finite_or_none({"auroc": m.auroc, "rce": m.rce, "calibration": m.calibration,
                                      "positives": m.positives, "count": m.count})
    return {"tasks": tasks}


def run_logistic_regression(raw: str, split_key: str, eval_fraction: float) -> dict[str, Any]:
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    data = _load_split(raw, split_key, eval_fraction)
    train, ev = ~data["eval"], data["eval"]
    scaler = StandardScaler().fit(data["x"][train])
    x_train, x_eval = scaler.transform(data["x"][train]), scaler.transform(data["x"][ev])
    predictions = np.zeros((int(ev.sum()), len(data["tasks"])))
    for index in range(len(data["tasks"])):
        model = LogisticRegression(C=1.0, max_iter=300).fit(x_train, data["y"][train, index])
        predictions[:, index] = model.predict_proba(x_eval)[:, 1]
    return _score(data, predictions)


def run_lightgbm(raw: str, split_key: str, eval_fraction: float) -> dict[str, Any]:
    import lightgbm as lgb

    from components.convert.plan import eval_mask

    data = _load_split(raw, split_key, eval_fraction)
    ev = data["eval"]
    # Validation for early stopping: carved from the training rows by the same key, salted apart.
    valid = ~ev & eval_mask(data["key"] * 7919 + 13, 0.1)
    fit = ~ev & ~valid
    predictions = np.zeros((int(ev.sum()), len(data["tasks"])))
    for index in range(len(data["tasks"])):
        x = np.concatenate([data["x"], _oof_encodings(data, index, fit)], axis=1)
        y = data["y"][:, index]
        params = {"objective": "binary", "learning_rate": 0.1, "num_leaves": 15, "min_data_in_leaf": 200,
                  "max_bin": 63, "feature_fraction": 0.8, "bagging_fraction": 0.8, "bagging_freq": 1,
                  "lambda_l2": 1.0, "num_threads": 1, "verbose": -1, "seed": index}  # one thread, as the ranker trains
        booster = lgb.train(params, lgb.Dataset(x[fit], y[fit]), num_boost_round=1000,
                            valid_sets=[lgb.Dataset(x[valid], y[valid])],
                            callbacks=[lgb.early_stopping(30, verbose=False)])
        predictions[:, index] = booster.predict(x[ev], num_iteration=booster.best_iteration)
    return _score(data, predictions)


# --------------------------------------------------------------------------- the Heavy Ranker


def run_ranker(data_dir: str, work: str, config: str, steps: int) -> dict[str, Any]:
    from components.evaluate.config import EvaluateConfig
    from components.evaluate.evaluator import run as evaluate
    from components.records.layout import EVAL_SPLIT, TRAIN_SPLIT, split_uri

    save_dir = os.path.join(work, "train")
    command = [sys.executable, "-m", "components.cli", "train", f"--config_path={config}",
               f"--train_data={split_uri(data_dir, TRAIN_SPLIT)}",
               f"--validation_data={split_uri(data_dir, EVAL_SPLIT)}", f"--save_dir={save_dir}"]
    if steps:
        command.append(f"--num_train_steps={steps}")
    with open(os.path.join(work, "train.log"), "w") as log:
        subprocess.run(command, check=True, stdout=log, stderr=subprocess.STDOUT)
    result = evaluate(os.path.join(save_dir, "model"), split_uri(data_dir, EVAL_SPLIT),
                      os.path.join(work, "evaluation"), EvaluateConfig())
    tasks = {t.task: {"auroc": t.auroc, "rce": t.rce, "calibration": t.calibration,
                      "positives": t.positives, "count": t.count} for t in result.tasks}
    from components.metrics.binary import finite_or_none

    return {"tasks": finite_or_none(tasks)}


def child(args: argparse.Namespace) -> None:
    """One model in this process; prints {"metrics", "seconds", "peak_rss_mb"} as JSON."""
    from components.common.logs import setup_logging

    setup_logging()
    started = time.perf_counter()
    if args.child == "ranker":
        metrics = run_ranker(args.data, args.work, args.config, args.steps)
    elif args.child == "logistic_regression":
        metrics = run_logistic_regression(args.raw, args.split_key, args.eval_fraction)
    else:
        metrics = run_lightgbm(args.raw, args.split_key, args.eval_fraction)
    peak = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
    result = json.dumps({"metrics": metrics, "seconds": time.perf_counter() - started, "peak_rss_mb": peak / 1024})
    Path(args.work, "result.json").write_text(result)  # kept with the model's work directory
    print(result)


# --------------------------------------------------------------------------- one seed, tables


def steps_for(config: str, rows: int, epochs: float, eval_fraction: float) -> int:
    from components.train.config import load_train_config

    batch = load_train_config(config).train_data.global_batch_size
    return max(1, round(epochs * rows * (1 - eval_fraction) / batch)) if epochs else 0


def _config_for_steps(config: str, steps: int, work: str) -> str:
    """The trainer YAML with `steps` steps, its cosine schedules ending there too."""
    import yaml

    data = yaml.safe_load(Path(config).read_text())
    data["training"]["num_train_steps"] = steps
    rates = data["optimizer"]["multi_task_learning_rates"]
    schedules = [rates.get("backbone_learning_rate"), rates.get("default_tower_learning_rate"),
                 *(rates.get("tower_learning_rates") or {}).values()]
    for schedule in schedules:
        if schedule and "linear_ramp_to_cosine" in schedule:
            schedule["linear_ramp_to_cosine"]["final_num_steps"] = steps
    path = os.path.join(work, f"trainer-{steps}.yaml")
    Path(path).write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def run_seed(seed: int, args: argparse.Namespace, work: str) -> dict[str, Any]:
    from components.common.schema import load_schema
    from components.convert import ConvertSettings
    from components.convert import run as convert
    from components.convert.plan import eval_mask
    from components.datagen import generate
    from components.datagen.eval_oracle import EvalProtocol, eval_oracle

    schema = load_schema("local")
    raw = os.path.join(work, f"raw-{args.rows}-{seed}")
    data = os.path.join(work, f"data-{args.rows}-{seed}-{args.split_key}-{args.eval_fraction}")
    if not os.path.exists(os.path.join(raw, "_MANIFEST.json")):  # --workdir keeps data between runs
        generate(schema, raw, rows=args.rows, files=4, seed=seed)
    started = time.perf_counter()
    if not os.path.exists(os.path.join(data, "eval", "_MANIFEST.json")):
        convert(raw, schema, data, ConvertSettings(split_key=args.split_key, eval_fraction=args.eval_fraction,
                                                   workers=2))
    convert_s = time.perf_counter() - started
    oracle = eval_oracle(raw, schema, EvalProtocol(args.split_key, args.eval_fraction), eval_mask)
    steps = args.steps or steps_for(args.config, args.rows, args.epochs, args.eval_fraction)
    if not steps:
        from components.train.config import load_train_config

        steps = load_train_config(args.config).training.num_train_steps
    config = _config_for_steps(args.config, steps, work)
    results = {}
    for model in args.models:
        model_work = tempfile.mkdtemp(prefix=f"{model}-{seed}-", dir=work)
        os.makedirs(model_work, exist_ok=True)
        command = ["nice", "-n", "10", sys.executable, "-m", "benchmarks.bench_quality", "--child", model,
                   "--raw", raw, "--data", data, "--work", model_work, "--config", config,
                   "--steps", str(steps), "--split-key", args.split_key, "--eval-fraction", str(args.eval_fraction)]
        out = subprocess.run(command, check=True, capture_output=True, text=True, cwd=ROOT)
        results[model] = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"seed {seed} {model}: {results[model]['seconds']:.0f} s", file=sys.stderr, flush=True)
    return {"seed": seed, "oracle": oracle, "models": results, "convert_s": convert_s, "steps": steps}


def _rows(metrics: dict[str, Any], oracle: dict[str, Any]) -> list[dict[str, Any]]:
    from components.evaluate.summary import summary_rows

    return summary_rows(metrics, oracle)


def _summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    kept = [r for r in rows if r["positives"] >= MIN_POSITIVES]
    cal = [r["calibration"] for r in kept if r["calibration"] is not None]
    mean = lambda k: float(np.mean([r[k] for r in kept if r[k] is not None]))  # noqa: E731
    return {"auroc": mean("auroc"), "rce": mean("rce"), "auroc_lift": mean("auroc_lift"), "rce_lift": mean("rce_lift"),
            "cal_min": min(cal), "cal_max": max(cal), "tasks": len(kept)}


NAMES = {"ranker": "Heavy Ranker (ours)", "logistic_regression": "logistic regression (no IDs)",
         "lightgbm": "LightGBM per task (+ ID target encodings)"}


def markdown(seeds: list[dict[str, Any]], args: argparse.Namespace) -> str:
    lines = [f"## {getattr(args, 'title', '') or 'Model quality'}",
             "",
             f"`python -m benchmarks.bench_quality --rows {args.rows} --seeds {' '.join(map(str, args.seeds))} "
             f"--split-key {args.split_key} --epochs {args.epochs:g}`: local schema, {args.rows:,} generated rows per seed, "
             f"{int(args.eval_fraction * 100)}% eval by a hash of `{args.split_key}`; all models scored on the same eval "
             f"rows with the same metric core. Means over tasks with >= {MIN_POSITIVES} eval positives; lifts are "
             "(AUROC-0.5)/(oracle-0.5) and RCE/oracle RCE, the oracle being the best prediction under this protocol "
             "(components/datagen/eval_oracle.py). Wall time and peak RSS per model from its own child process."
             + (f" {args.note}" if getattr(args, "note", "") else ""),
             ""]
    for s in seeds:
        o = _summary(_rows(s["oracle"], s["oracle"]))
        lines += [f"Seed {s['seed']} (ranker: {s['steps']} steps; convert {s['convert_s']:.0f} s, not counted; "
                  f"eval rows with an unseen user {s['oracle']['unseen_user_share']:.0%}):", "",
                  "| model | mean AUROC | mean RCE | AUROC lift | RCE lift | calibration range | wall s | peak RSS MB |",
                  "|---|---:|---:|---:|---:|---|---:|---:|"]
        for model, r in s["models"].items():
            m = _summary(_rows(r["metrics"], s["oracle"]))
            lines.append(f"| {NAMES[model]} | {m['auroc']:.4f} | {m['rce']:.2f} | {m['auroc_lift']:.3f} | "
                         f"{m['rce_lift']:.3f} | {m['cal_min']:.2f}-{m['cal_max']:.2f} | {r['seconds']:.0f} | "
                         f"{r['peak_rss_mb']:.0f} |")
        lines += [f"| oracle under this protocol | {o['auroc']:.4f} | {o['rce']:.2f} | 1 | 1 | "
                  f"{o['cal_min']:.2f}-{o['cal_max']:.2f} | | |", ""]
        lines += ["| task | positives | " + " | ".join(f"{m} AUROC / RCE / cal." for m in s["models"]) +
                  " | oracle AUROC / RCE / cal. |", "|---|---:|" + "---|" * (len(s["models"]) + 1)]
        for row in _rows(s["oracle"], s["oracle"]):
            task = row["task"]
            cells = []
            for r in s["models"].values():
                t = r["metrics"]["tasks"][task]
                cells.append(" / ".join(_f(t.get(k), f) for k, f in (("auroc", ".3f"), ("rce", ".2f"), ("calibration", ".2f"))))
            cells.append(" / ".join(_f(row[k], f) for k, f in (("oracle_auroc", ".3f"), ("oracle_rce", ".2f"),
                                                               ("oracle_calibration", ".2f"))))
            lines.append(f"| {task} | {row['positives']} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def merge_runs(runs: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Seeds from several `--json` files (one seed, or some models, per run) as one list.

    Runs of the same seed must share the data and the protocol (same oracle); their models are
    merged in the usual order, the ranker's step count kept from the run that trained it.
    """
    seeds: dict[int, dict[str, Any]] = {}
    for run in runs:
        for s in run:
            if s["seed"] not in seeds:
                seeds[s["seed"]] = {**s, "models": dict(s["models"])}
                continue
            kept = seeds[s["seed"]]
            if kept["oracle"]["tasks"] != s["oracle"]["tasks"]:
                raise SystemExit(f"seed {s['seed']}: the runs scored different eval rows (their oracles differ)")
            kept["models"].update(s["models"])
            if "ranker" in s["models"]:
                kept["steps"] = s["steps"]
    for s in seeds.values():
        s["models"] = {m: s["models"][m] for m in MODELS if m in s["models"]}
    return [seeds[k] for k in sorted(seeds)]


def _f(value: Any, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--split-key", default="user_id", help="convert's split key: user_id (cold start), tweet_id")
    parser.add_argument("--eval-fraction", type=float, default=0.1)
    parser.add_argument("--config", default=str(ROOT / "configs" / "local.yaml"), help="trainer YAML")
    parser.add_argument("--epochs", type=float, default=1.0,
                        help="ranker steps as passes over the training split (0: the config's num_train_steps)")
    parser.add_argument("--steps", type=int, default=0, help="ranker steps (overrides --epochs)")
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--workdir", default="", help="keep data and models here and reuse the data (default: a temp dir)")
    parser.add_argument("--out", default=str(RESULT))
    parser.add_argument("--json", default="", help="also write the raw results here")
    parser.add_argument("--from-json", nargs="+", default=[],
                        help="only write the tables from earlier runs' --json files (seeds or models run apart)")
    parser.add_argument("--title", default="", help="the section's heading (default: Model quality)")
    parser.add_argument("--note", default="", help="a sentence appended to the table's header (what was not run)")
    parser.add_argument("--child", choices=MODELS, help=argparse.SUPPRESS)
    parser.add_argument("--raw", help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    if args.from_json:
        seeds = merge_runs([json.loads(Path(path).read_text()) for path in args.from_json])
        args.seeds = [s["seed"] for s in seeds]
    elif args.workdir:
        os.makedirs(args.workdir, exist_ok=True)
        seeds = [run_seed(seed, args, args.workdir) for seed in args.seeds]
    else:
        with tempfile.TemporaryDirectory(prefix="bench-quality-") as work:
            seeds = [run_seed(seed, args, work) for seed in args.seeds]
    text = markdown(seeds, args)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    if args.json:
        Path(args.json).write_text(json.dumps(seeds, indent=1))


if __name__ == "__main__":
    main()
