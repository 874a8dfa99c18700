"""`recap pipeline compile | run | submit`. kfp is imported inside the handlers so that
`recap --help` (which builds every parser) stays fast."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
from typing import Any

from components.cli import Command
from components.common.config import repo_configs_dir
from components.common.errors import EXIT_CHECK_FAILED, ConfigError

DEFAULT_OUTPUT = "recap_pipeline.yaml"

# `recap pipeline ...`, registered with the `recap` router in pyproject.toml ([project.entry-points."recap.commands"]).
COMPILE = Command(("pipeline", "compile"), __name__, "compile the KFP v2 DAG to YAML", "pipeline", "recap-launch")
RUN = Command(("pipeline", "run"), __name__, "run the whole DAG on this machine through kfp.local", "pipeline", "recap-launch")
SUBMIT = Command(("pipeline", "submit"), __name__, "submit the DAG to a Kubeflow Pipelines host", "pipeline", "recap-launch")


def _add_image_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--registry", default=None, help="image registry (default: RECAP_IMAGE_REGISTRY or pipeline/images.py)")
    parser.add_argument("--tag", default=None, help="image tag (default: RECAP_IMAGE_TAG or pipeline/images.py)")
    parser.add_argument("--gcs-secret", default="", help="Secret (with key.json) every pod mounts for GCS; "
                        "default: none, pods use workload identity")
    parser.add_argument("--storage-config-map", default="", metavar="NAME",
                        help="ConfigMap whose STORAGE_EMULATOR_HOST every pod gets as env (kind: recap-storage); "
                        "default: none, real GCS")


def _options(args: argparse.Namespace) -> Any:
    from pipeline.dag import CompileOptions
    from pipeline.images import ImageSettings

    defaults = ImageSettings()
    images = ImageSettings(registry=args.registry or defaults.registry, tag=args.tag or defaults.tag)
    return CompileOptions(images=images, gcs_secret=args.gcs_secret, storage_config_map=args.storage_config_map)


# --------------------------------------------------------------------------- compile


def add_compile_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--output", "-o", default=DEFAULT_OUTPUT, help=f"YAML to write (default: {DEFAULT_OUTPUT})")
    _add_image_arguments(parser)


def run_compile(args: argparse.Namespace) -> int:
    from pipeline.dag import compile_pipeline

    path = compile_pipeline(args.output, _options(args))
    print(path)
    return 0


# --------------------------------------------------------------------------- run (kfp.local)


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--raw", required=True, help="raw Parquet directory (local path or gs://)")
    parser.add_argument("--root", required=True, help="data/output root for TFRecords, checkpoints, models")
    parser.add_argument("--train-config", default=None,
                        help="trainer YAML (default: the bundled configs/local.yaml)")
    parser.add_argument("--runner", choices=("subprocess", "docker"), default="subprocess",
                        help="subprocess: steps in this venv; docker: every step in the image the YAML names, "
                             "training as the PyTorchJob's pods in containers (pipeline/docker_run.py)")
    parser.add_argument("--schema", default="local", help="schema variant or YAML (default: local)")
    parser.add_argument("--num-workers", type=int, default=1, help="simulated nodes (torchrun agents)")
    parser.add_argument("--procs-per-worker", type=int, default=1, help="processes per node")
    parser.add_argument("--num-train-steps", type=int, default=0, help="override the config's steps (0 = keep)")
    parser.add_argument("--baseline-metrics-uri", default="", help="metrics.json of the model to beat")
    parser.add_argument("--evaluate-config", default="", help="evaluation and blessing config YAML "
                        "(default: the bundled configs/evaluate.yaml)")
    parser.add_argument("--serving-uri", default="", help="push target (default: <root>/serving)")
    parser.add_argument("--pipeline-root", default=None, help="kfp.local's artifact root (default: <root>/kfp)")
    parser.add_argument("--cache", action="store_true", help="reuse kfp.local cached step outputs")
    parser.add_argument("--param", action="append", default=[], metavar="NAME=VALUE", help="any other pipeline parameter")
    parser.add_argument("--summary", action="store_true",
                        help="print a per-task table (vs the generator's oracle when RAW has one) instead of JSON")


def _eval_protocol(params: dict[str, Any]) -> Any:
    """The split the run's convert step applied (its convert_config, else the defaults)."""
    from components.common.config import load_config
    from components.convert import ConvertSettings
    from components.datagen.eval_oracle import EvalProtocol

    path = params.get("convert_config") or ""
    settings = load_config(path, ConvertSettings) if path else ConvertSettings()
    return EvalProtocol(settings.split_key, settings.eval_fraction)


def _print_summary(result, raw_uri: str, schema: str, params: dict[str, Any]) -> None:
    from components.common import storage
    from components.convert.plan import eval_mask
    from components.datagen.constants import ORACLE_FILE
    from components.datagen.eval_oracle import eval_oracle
    from components.evaluate.summary import summary_table

    # The yardstick: the best predictions on the same eval rows under the same split.
    oracle = None
    if storage.exists(storage.join(raw_uri, ORACLE_FILE)):  # data made by `recap data generate`
        oracle = eval_oracle(raw_uri, schema, _eval_protocol(params), eval_mask)
    if result.metrics:
        print(summary_table(storage.read_json(result.metrics), oracle))
    verdict = "SUCCEEDED" if result.succeeded else f"FAILED at {', '.join(result.failed_tasks) or '?'}"
    print(f"\nrun {verdict} in {result.seconds:.0f} s; blessed: {result.blessed}")
    if result.failure:
        print(f"  failed step:        {result.failure.step}")
        print(f"  reason:             {result.failure.reason}")
        print(f"  step log:           {result.failure.log}")
    for label, where in (("validation report", result.validation_report), ("evaluation report", result.report),
                         ("metrics", result.metrics), ("model", result.model_uri),
                         ("serving copy", result.serving_model_uri)):
        if where:
            print(f"  {label + ':':19} {where}")


def run_run(args: argparse.Namespace) -> int:
    from pipeline.local_run import run_local

    params = parse_params(args.param, _parameter_types())
    train_config = args.train_config or str(repo_configs_dir() / "local.yaml")
    # The eval protocol: new items of trained users (configs/convert.yaml), unless --param says otherwise.
    params.setdefault("convert_config", str(repo_configs_dir() / "convert.yaml"))
    runner = contextlib.nullcontext(None)
    if args.runner == "docker":
        from pipeline.docker_run import container_tasks

        # In the images, configs/ is the working directory's, and training runs as containers too.
        train_config = args.train_config or "configs/local.yaml"
        if params["convert_config"] == str(repo_configs_dir() / "convert.yaml"):
            params["convert_config"] = "configs/convert.yaml"
        params.setdefault("train_backend", "docker")
        if "://" not in args.root:
            os.makedirs(args.root, exist_ok=True)  # mounted into the containers, so it must exist
        local_paths = [os.path.abspath(p) for p in (args.raw, args.root, args.serving_uri, args.pipeline_root)
                       if p and "://" not in p] + ([train_config] if os.path.isabs(train_config) else [])
        runner = container_tasks(tuple(local_paths))
    # kfp.local echoes every step's output to stdout; send it to stderr, keep stdout for the result JSON.
    with contextlib.redirect_stdout(sys.stderr), runner as kfp_runner:
        result = run_local(
            args.raw, args.root, train_config, schema=args.schema, num_workers=args.num_workers,
            procs_per_worker=args.procs_per_worker, num_train_steps=args.num_train_steps,
            baseline_metrics_uri=args.baseline_metrics_uri, evaluate_config=args.evaluate_config,
            serving_uri=args.serving_uri, pipeline_root=args.pipeline_root, enable_caching=args.cache,
            extra_params=params, runner=kfp_runner,
        )
    if args.summary:
        _print_summary(result, args.raw, args.schema, params)
    else:
        print(json.dumps(result.to_json(), indent=2))
    return 0 if result.succeeded else EXIT_CHECK_FAILED


# --------------------------------------------------------------------------- submit (kfp.Client)


def add_submit_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", required=True, help="KFP API endpoint, e.g. https://kfp.example.com/pipeline")
    parser.add_argument("--experiment", required=True, help="experiment name (created if missing)")
    parser.add_argument("--param", action="append", default=[], metavar="NAME=VALUE", help="pipeline parameter")
    parser.add_argument("--package", default=None, help="compiled YAML (default: compile now)")
    parser.add_argument("--run-name", default=None)
    parser.add_argument("--namespace", default=None, help="KFP (multi-user) namespace")
    parser.add_argument("--service-account", default=None, help="run pods as this KSA (needs the launcher Role)")
    parser.add_argument("--no-cache", action="store_true", help="recompute every step in this run")
    _add_image_arguments(parser)


def run_submit(args: argparse.Namespace) -> int:
    import kfp

    from pipeline.dag import compile_pipeline

    params = parse_params(args.param, _parameter_types())
    # kfp.Client prints its own links; keep stdout to the one run URL so CI can capture it.
    with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stdout(sys.stderr):
        package = args.package or compile_pipeline(os.path.join(tmp, DEFAULT_OUTPUT), _options(args))
        if args.no_cache:
            package = without_caching(package, os.path.join(tmp, "no-cache.yaml"))
        client = kfp.Client(host=args.host, namespace=args.namespace)
        run = client.create_run_from_pipeline_package(
            package, arguments=params, run_name=args.run_name, experiment_name=args.experiment,
            namespace=args.namespace, service_account=args.service_account,
        )
    print(run_url(args.host, run.run_id))
    return 0


def without_caching(package: str, output: str) -> str:
    """A copy of the pipeline YAML with caching off in every task, sub-DAGs included.

    kfp.Client(enable_caching=False) only rewrites the root DAG's tasks, and every step of
    ours sits inside the exit handler's sub-DAG, so it would silently keep caching.
    """
    import yaml

    with open(package) as handle:
        docs = [doc for doc in yaml.safe_load_all(handle) if doc]
    spec = docs[0]
    dags = [spec["root"].get("dag", {})] + [c["dag"] for c in spec.get("components", {}).values() if "dag" in c]
    for dag in dags:
        for task in dag.get("tasks", {}).values():
            task["cachingOptions"] = {"enableCache": False}
    with open(output, "w") as handle:
        yaml.safe_dump_all(docs, handle, sort_keys=False)
    return output


def run_url(host: str, run_id: str) -> str:
    return f"{host.rstrip('/')}/#/runs/details/{run_id}"


# --------------------------------------------------------------------------- parameters


def _parameter_types() -> dict[str, type]:
    """Pipeline parameter name -> Python type, read from the pipeline function's signature."""
    import inspect

    from pipeline.dag import build_pipeline

    signature = inspect.signature(build_pipeline().pipeline_func)
    return {name: p.annotation for name, p in signature.parameters.items()}


def parse_params(items: list[str], types: dict[str, type]) -> dict[str, Any]:
    """`name=value` strings -> typed pipeline arguments; unknown names and bad values are errors."""
    out: dict[str, Any] = {}
    for item in items:
        name, sep, text = item.partition("=")
        if not sep:
            raise ConfigError(f"--param expects NAME=VALUE, got {item!r}")
        if name not in types:
            raise ConfigError(f"--param {name}: not a pipeline parameter; known: {', '.join(sorted(types))}")
        kind = types[name]
        try:
            if kind is bool:
                if text.lower() not in ("true", "false", "1", "0"):
                    raise ValueError(text)
                value: Any = text.lower() in ("true", "1")
            else:
                value = kind(text)
        except ValueError as exc:
            raise ConfigError(f"--param {name}: expected {kind.__name__}, got {text!r}") from exc
        out[name] = value
    return out
