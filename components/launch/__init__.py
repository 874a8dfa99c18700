"""Start training: a Kubeflow PyTorchJob (`kubernetes`), local torchrun processes (`local`) or
the PyTorchJob's pods as containers on one Docker engine (`docker`).

`run(spec, args, backend)` builds the trainer command once and hands it to a backend; the
Kubernetes client is imported only when that backend is used.
"""

from __future__ import annotations

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
        shards: dict[str, int] | None = None) -> LaunchResult:
    """Run training to completion on `backend`; raises TrainingFailed (exit 1) if it does not succeed.

    First checks that the trainer can start with the job's ranks (batch sizes, and the shard
    count of each split when `shards` gives it): a ConfigError here, before any pod starts.
    """
    from components.common.errors import ConfigError
    from components.launch.command import trainer_command

    check_shape(spec, args, backend, shards)

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
