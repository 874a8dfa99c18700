"""Start training: a Kubeflow PyTorchJob (`kubernetes`), local torchrun processes (`local`) or
the PyTorchJob's pods as containers on one Docker engine (`docker`).

`run(spec, args, backend)` builds the trainer command once and hands it to a backend; the
Kubernetes client is imported only when that backend is used.
"""

from __future__ import annotations

import logging

from components.launch.spec import (
    BACKENDS,
    ElasticSpec,
    LaunchCancelled,
    LaunchResult,
    LaunchSpec,
    LaunchTimeout,
    TrainingFailed,
    job_name,
)
from components.trainer_command.flags import TrainerArgs

log = logging.getLogger(__name__)

__all__ = [
    "BACKENDS", "ElasticSpec", "LaunchCancelled", "LaunchResult", "LaunchSpec", "LaunchTimeout",
    "TrainingFailed", "check_shape", "job_name", "run",
]


def check_shape(spec: LaunchSpec, args: TrainerArgs, backend: str, shards: dict[str, int] | None = None) -> None:
    """The trainer's start-up checks for every node count the job may run with (elastic: each)."""
    from components.trainer_command.launch_shape import check_launch_shape

    nodes = range(spec.elastic.min_replicas, spec.elastic.max_replicas + 1) if spec.elastic else [spec.num_workers]
    for count in nodes:
        check_launch_shape(args.config_path, dict(args.flags), count, spec.procs_per_worker, shards,
                           config_here=backend == "local")


def check_data(args: TrainerArgs, backend: str) -> None:
    """The first records of the trainer's splits against the data contract (components.records.sample),
    before any pod or process starts: a split that breaks it fails here in about a second.

    The schema and what the model reads come from the trainer config when this machine has it
    (always for `local`); otherwise (a config path inside the training image) the schema is the
    one the split's manifest names, and the layout is checked by the trainer's reader.
    """
    from components.common.schema import load_schema
    from components.records.layout import ModelReads
    from components.records.sample import check_split_sample

    splits = [(name, uri) for name in ("train_data", "validation_data") if (uri := args.value(name))]
    config = _readable_config(args.config_path, backend)
    for section, uri in splits:
        if config is not None:
            schema_name = (config.get(section) or config.get("train_data") or {}).get("seg_dense_schema", "local")
            reads = ModelReads.from_trainer_config(args.config_path) if section == "train_data" else None
        else:
            from components.common.manifest import read_manifest

            schema_name, reads = read_manifest(uri)[0].extra.get("schema", "local"), None
        result = check_split_sample(uri, load_schema(schema_name), reads)
        log.info("%s: first %d records of %d shard(s) of %s meet the data contract", section, result.records,
                 result.shards, uri)


def _readable_config(config_path: str, backend: str) -> dict | None:
    """The trainer YAML as data, or None when it names a file only the training image has."""
    from pathlib import Path

    from components.common.config import read_yaml

    if backend != "local" and "://" not in config_path and not Path(config_path).is_file():
        return None
    return read_yaml(config_path) or {}


def with_cluster_service(spec: LaunchSpec, args: TrainerArgs) -> TrainerArgs:
    """The trainer's flags for the job's own data service (components/launch/cluster_service.py):
    its dispatcher's Service address, and a connect timeout long enough for its pods to start."""
    from components.launch.cluster_service import CLUSTER_CONNECT_TIMEOUT_S, dispatcher_address

    return _with_service(args, dispatcher_address(spec), CLUSTER_CONNECT_TIMEOUT_S)


def _with_service(args: TrainerArgs, address: str, connect_timeout_s: float) -> TrainerArgs:
    """The trainer reads through the dispatcher at `address`, waiting for it `connect_timeout_s`
    unless the flags already say how long."""
    args = args.with_flag("data_service_dispatcher", address)
    if "data_service_connect_timeout_s" not in dict(args.flags):
        args = args.with_flag("data_service_connect_timeout_s", connect_timeout_s)
    return args


def run(spec: LaunchSpec, args: TrainerArgs, backend: str = "local", kubeconfig: str | None = None,
        shards: dict[str, int] | None = None, data_check: bool = False) -> LaunchResult:
    """Run training to completion on `backend`; raises TrainingFailed (exit 1) if it does not succeed.

    First checks that the trainer can start with the job's ranks (batch sizes, and the shard
    count of each split when `shards` gives it) and, with `data_check` (the CLI and the pipeline's
    train step), that the first records of each split meet the data contract (`check_data`): a
    ConfigError or DataError here, before any pod starts.
    """
    from components.common.errors import ConfigError
    from components.launch.command import trainer_command

    check_shape(spec, args, backend, shards)
    if data_check:
        check_data(args, backend)

    if backend == "local":
        from components.launch.local import free_port, run_torchrun

        endpoint = f"127.0.0.1:{free_port()}" if spec.num_workers > 1 else None
        if spec.data_service_workers:
            from components.launch.local_service import data_service

            with data_service(spec.data_service_workers, spec.job_name) as service:
                args = args.with_flag("data_service_dispatcher", service.dispatcher)
                return run_torchrun(spec, trainer_command(spec, args, backend, rdzv_endpoint=endpoint))
        return run_torchrun(spec, trainer_command(spec, args, backend, rdzv_endpoint=endpoint))
    if backend == "kubernetes":
        if not spec.image:
            raise ConfigError("launch: the kubernetes backend needs --image (the training image)")
        from components.launch.cluster import run_pytorchjob

        if spec.data_service_workers:
            args = with_cluster_service(spec, args)
        return run_pytorchjob(spec, trainer_command(spec, args, backend), kubeconfig=kubeconfig)
    if backend == "docker":  # the PyTorchJob's pods as containers on one Docker engine
        if not spec.image:
            raise ConfigError("launch: the docker backend needs --image (the training image)")
        from components.launch.docker import run_pytorchjob_in_docker

        service = None
        if spec.data_service_workers:
            from components.launch.docker_service import DOCKER_CONNECT_TIMEOUT_S, plan_data_service

            service = plan_data_service(spec.data_service_workers)
            args = _with_service(args, service.address, DOCKER_CONNECT_TIMEOUT_S)
        return run_pytorchjob_in_docker(spec, trainer_command(spec, args, "kubernetes"), data_service=service)
    raise ConfigError(f"launch: unknown backend {backend!r}; one of {', '.join(BACKENDS)}")
