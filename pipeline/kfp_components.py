"""KFP v2 components: typed, thin wrappers over `components.*` (the interface; the work is there).

Each function below becomes a lightweight Python component whose image comes from
`pipeline.images` (`make_components`). Bodies only import, call one step function and record
artifacts; they run inside the step's image (or this venv under kfp.local), which ships
`kfp` itself, hence `install_kfp_package=False`: nothing is pip-installed at run time.
"""

from dataclasses import dataclass
from typing import NamedTuple

from kfp import dsl
from kfp.dsl import HTML, Artifact, ClassificationMetrics, Dataset, Input, Metrics, Model, Output

from pipeline.images import ImageSettings


def validate(
    raw_data_uri: str,
    schema: str,
    validate_config: str,
    reference_stats_uri: str,
    data_root: str,
    cache_key: str,
    statistics: Output[Artifact],
    report: Output[HTML],
    metrics: Output[Metrics],
) -> NamedTuple("ValidateOutputs", [("passed", bool), ("summary", str)]):
    """Statistics, anomalies and drift of the raw Parquet; `passed` gates the rest of the DAG."""
    import collections
    import os

    from components.common.logs import setup_logging
    from components.common.schema import load_schema
    from components.validate import load_validation_config, run
    from pipeline import runtime

    setup_logging()
    runtime.check_data_root(statistics.uri, data_root)  # the first step: fail before any work
    os.makedirs(statistics.path, exist_ok=True)
    result = runtime.retry_transient(lambda: run(
        raw_data_uri, load_schema(schema), statistics.path, load_validation_config(validate_config or None),
        reference_stats_uri or None), "validate")
    runtime.copy_file(result.report_uri, report.path)
    runtime.log_scalars(metrics, result.metrics)
    statistics.metadata.update({"rows": result.rows, "files": result.files, "input": raw_data_uri})
    summary = runtime.anomaly_summary(result.errors, raw_data_uri)
    return collections.namedtuple("ValidateOutputs", ["passed", "summary"])(not result.has_errors, summary)


def validation_gate(passed: bool, summary: str) -> None:
    """Fail the run when validation found errors; the report stays on the (successful) validate task."""
    if not passed:
        print(summary)  # every error, for the log; the failure itself is one line
        raise SystemExit(f"pipeline stopped by data validation: {summary.splitlines()[0]}")
    print("data validation passed")


def convert(
    raw_data_uri: str,
    schema: str,
    convert_config: str,
    validate_config: str,
    data_root: str,
    cache_key: str,
    tfrecords: Output[Dataset],
    num_workers: int = 1,
    procs_per_worker: int = 0,
    gpus_per_worker: int = 0,
):
    """Raw Parquet -> gzip TFRecord train/eval splits, written straight to the data location.

    Unless `convert_config` sets `shards`, each split gets enough shards for the training job's
    ranks (every rank reads shards of its own); the counts go into the artifact's metadata, where
    the train step checks them before it launches.

    The contract's thresholds come from `validate_config`, as validate's do: what it passed, convert accepts.
    """
    from components.common.config import load_config
    from components.common.contract import load_thresholds
    from components.common.logs import setup_logging
    from components.common.schema import load_schema
    from components.convert import ConvertSettings, run
    from components.records.layout import EVAL_SPLIT, TRAIN_SPLIT, split_uri
    from pipeline import runtime

    setup_logging()
    settings = load_config(convert_config, ConvertSettings) if convert_config else ConvertSettings()
    settings = runtime.shards_for_ranks(settings, runtime.ranks(num_workers, procs_per_worker, gpus_per_worker))
    thresholds = load_thresholds(validate_config or None)
    settings.max_non_finite_share, settings.severity = thresholds.max_non_finite_share, dict(thresholds.severity)
    location = runtime.data_location(tfrecords.uri, data_root)
    result = runtime.retry_transient(lambda: run(raw_data_uri, load_schema(schema), location, settings), "convert")
    runtime.record_location(
        tfrecords, location, train_uri=split_uri(location, TRAIN_SPLIT), eval_uri=split_uri(location, EVAL_SPLIT),
        train_records=result.records.get(TRAIN_SPLIT), eval_records=result.records.get(EVAL_SPLIT),
        train_shards=len(result.shard_uris.get(TRAIN_SPLIT, ())), eval_shards=len(result.shard_uris.get(EVAL_SPLIT, ())),
        rows_per_s=round(result.rows_per_s, 1),
    )


def train(
    tfrecords: Input[Dataset],
    train_config: str,
    data_root: str,
    backend: str,
    run_id: str,
    train_image: str,
    namespace: str,
    num_workers: int,
    procs_per_worker: int,
    gpus_per_worker: int,
    cpu_per_worker: str,
    memory_per_worker: str,
    num_train_steps: int,
    timeout_s: int,
    gcs_secret: str,
    service_account: str,
    model: Output[Model],
    poll_interval_s: float = 15.0,
    trainer_env: str = "",
    data_service_workers: int = 0,
):
    """Launch training (PyTorchJob or local torchrun) and record the exported model's location.

    Training pods run as `service_account` (Workload Identity) unless a key Secret is mounted;
    STORAGE_EMULATOR_HOST (given to every pod by `--storage-config-map`), this pod's NCCL_* and
    TORCH_NCCL_* variables and `trainer_env` (`KEY=VALUE,...`) are forwarded to them. Empty
    `cpu_per_worker`/`memory_per_worker` mean per-GPU requests (components.launch.spec), or
    8 CPUs and 32Gi without GPUs. The job's shape is checked against the config and convert's
    shard counts before it is launched.
    """
    import os

    from components.common import storage
    from components.common.logs import setup_logging
    from components.launch import LaunchSpec, job_name
    from components.launch import run as launch
    from components.launch.spec import parse_env, passthrough_env
    from components.records.layout import EVAL_SPLIT, TRAIN_SPLIT, split_uri
    from components.train.constants import MODEL_SUBDIR
    from components.trainer_command.flags import TrainerArgs
    from pipeline import runtime

    setup_logging()
    data = runtime.data_uri(tfrecords)
    location = runtime.data_location(model.uri, data_root)
    checkpoints, exported = storage.join(location, "checkpoints"), storage.join(location, MODEL_SUBDIR)
    args = TrainerArgs.of(
        train_config, train_data=split_uri(data, TRAIN_SPLIT), validation_data=split_uri(data, EVAL_SPLIT),
        save_dir=checkpoints, model_dir=exported, num_train_steps=num_train_steps if num_train_steps > 0 else None,
    )
    spec = LaunchSpec(
        job_name=job_name(run_id), image=train_image, namespace=namespace, num_workers=num_workers,
        procs_per_worker=procs_per_worker, gpus_per_worker=gpus_per_worker,
        cpu=cpu_per_worker or ("" if gpus_per_worker else "8"),
        memory=memory_per_worker or ("" if gpus_per_worker else "32Gi"),
        timeout_s=float(timeout_s), gcs_secret=gcs_secret, poll_interval_s=poll_interval_s,
        service_account="" if gcs_secret else service_account, data_service_workers=data_service_workers,
        env=(*tuple((k, os.environ[k]) for k in ("STORAGE_EMULATOR_HOST",) if os.environ.get(k)),
             *passthrough_env(), *parse_env(trainer_env, "trainer_env")),
    )
    shards = {section: int(tfrecords.metadata[key]) for section, key in
              (("train_data", "train_shards"), ("validation_data", "eval_shards")) if tfrecords.metadata.get(key)}
    # the job's shape, then each split's first records against the data contract, before any pod
    result = launch(spec, args, backend=backend, shards=shards, data_check=True)
    model.metadata["framework"] = "pytorch"
    runtime.record_location(model, exported, checkpoints_uri=checkpoints,
                            job_name=result.job_name, backend=backend, train_seconds=round(result.seconds, 1))


def delete_training_job(run_id: str, namespace: str, backend: str) -> None:
    """Exit handler: delete the run's PyTorchJob whatever happened (a no-op for local runs)."""
    from components.common.logs import setup_logging
    from components.launch import job_name

    setup_logging()
    if backend == "kubernetes":
        from components.launch.cluster import delete_job

        delete_job(job_name(run_id), namespace)


def evaluate(
    model: Input[Model],
    tfrecords: Input[Dataset],
    evaluate_config: str,
    baseline_metrics_uri: str,
    evaluation: Output[Artifact],
    metrics: Output[Metrics],
    classification: Output[ClassificationMetrics],
    report: Output[HTML],
) -> NamedTuple("EvaluateOutputs", [("blessed", bool), ("reason", str)]):
    """Metrics on the eval split, the HTML report and the blessing against the baseline.

    The blessing's criteria come from `evaluate_config` (a YAML path or gs:// URI; empty: the
    bundled configs/evaluate.yaml).
    """
    import collections
    import os

    from components.common import storage
    from components.common.logs import setup_logging
    from components.evaluate import run
    from components.evaluate.config import load_evaluate_config
    from components.evaluate.constants import CLASSIFICATION_FILE, KFP_METRICS_FILE, REPORT_FILE
    from components.records.layout import EVAL_SPLIT, split_uri
    from pipeline import runtime

    setup_logging()
    config = load_evaluate_config(evaluate_config or None)
    os.makedirs(evaluation.path, exist_ok=True)
    result = runtime.retry_transient(lambda: run(
        runtime.data_uri(model), split_uri(runtime.data_uri(tfrecords), EVAL_SPLIT), evaluation.path, config,
        baseline_metrics_uri or None), "evaluate")
    runtime.log_scalars(metrics, storage.read_json(storage.join(evaluation.path, KFP_METRICS_FILE)))
    runtime.log_classification(classification, storage.read_json(storage.join(evaluation.path, CLASSIFICATION_FILE)))
    runtime.copy_file(storage.join(evaluation.path, REPORT_FILE), report.path)
    evaluation.metadata.update({"blessed": result.blessed, "examples": result.examples})
    return collections.namedtuple("EvaluateOutputs", ["blessed", "reason"])(result.blessed, result.blessing.reason)


def not_blessed(reason: str) -> None:
    """The other branch of the blessing: say in the run why nothing was pushed."""
    print(f"model not blessed, not pushed: {reason}")


def push(
    model: Input[Model],
    evaluation: Input[Artifact],
    serving_uri: str,
    data_root: str,
    version: str,
) -> NamedTuple("PushOutputs", [("serving_model_uri", str)]):
    """Copy the model to `<serving>/<version>/` and move the `LATEST` pointer to it, if its
    evaluation blessed it: push checks blessing.json itself, the DAG's branch is not the only guard."""
    import collections

    from components.common.logs import setup_logging
    from components.push import PushConfig, run, serving_root
    from pipeline import runtime

    setup_logging()
    target = run(runtime.data_uri(model), evaluation.path, serving_root(serving_uri, data_root),
                 PushConfig(version=version), extra={"evaluation_uri": evaluation.uri})
    return collections.namedtuple("PushOutputs", ["serving_model_uri"])(target)


@dataclass(frozen=True)
class Components:
    validate: object
    validation_gate: object
    convert: object
    train: object
    delete_training_job: object
    evaluate: object
    not_blessed: object
    push: object


# step -> image (names from pipeline.images.IMAGES)
STEP_IMAGES = {
    "validate": "recap-validate",
    "validation_gate": "recap-launch",
    "convert": "recap-convert",
    "train": "recap-launch",
    "delete_training_job": "recap-launch",
    "evaluate": "recap-evaluate",
    "not_blessed": "recap-launch",
    "push": "recap-launch",
}


def make_components(images: ImageSettings) -> Components:
    """The KFP components with their images from one settings place."""
    functions = {
        "validate": validate, "validation_gate": validation_gate, "convert": convert, "train": train,
        "delete_training_job": delete_training_job, "evaluate": evaluate, "not_blessed": not_blessed, "push": push,
    }
    built = {
        name: dsl.component(base_image=images.image(STEP_IMAGES[name]), install_kfp_package=False)(fn)
        for name, fn in functions.items()
    }
    return Components(**built)
