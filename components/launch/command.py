"""The one trainer command line both backends run, built by `components.train.cli.torchrun_command`."""

from __future__ import annotations

from components.launch.spec import LaunchSpec, TrainerArgs

# Inside a PyTorchJob the training operator puts MASTER_ADDR/MASTER_PORT (the master pod's
# service) into every container's env; Kubernetes expands `$(VAR)` in args from that env.
OPERATOR_RDZV_ENDPOINT = "$(MASTER_ADDR):$(MASTER_PORT)"
# An elastic job has no Master: the operator puts the rendezvous at worker 0 and says where in
# PET_RDZV_ENDPOINT (`<job>-worker-0:23456`).
OPERATOR_ELASTIC_RDZV_ENDPOINT = "$(PET_RDZV_ENDPOINT)"
CONTAINER_TORCHRUN = ("torchrun",)


def trainer_command(spec: LaunchSpec, args: TrainerArgs, backend: str, rdzv_endpoint: str | None = None) -> list[str]:
    """`torchrun --nnodes=N --nproc_per_node=P ... -m components.train --config_path=... --train_data=...`.

    One node runs `--standalone`; several nodes meet by c10d rendezvous at the operator's
    master service (kubernetes; worker 0 for elastic jobs) or at `rdzv_endpoint` on 127.0.0.1
    (local), with the job name as rendezvous id so two jobs can never join each other.
    """
    from components.train.cli import TORCHRUN, torchrun_command

    flags: dict[str, object] = {
        "train_data": args.train_data,
        "validation_data": args.validation_data,
        "save_dir": args.save_dir,
        "model_dir": args.model_dir,
        **dict(args.extra),
    }
    multi_node = spec.num_workers > 1 or spec.elastic is not None
    if multi_node and rdzv_endpoint is None:
        if backend == "kubernetes":
            rdzv_endpoint = OPERATOR_ELASTIC_RDZV_ENDPOINT if spec.elastic is not None else OPERATOR_RDZV_ENDPOINT
        if rdzv_endpoint is None:
            raise ValueError("a multi-node local launch needs a rendezvous endpoint")
    return torchrun_command(
        args.config_path,
        nproc_per_node=spec.procs_per_worker,
        nnodes=spec.nnodes,  # type: ignore[arg-type]  # "min:max" for elastic jobs
        max_restarts=spec.elastic.max_restarts if spec.elastic else 0,
        overrides=flags,
        rdzv_endpoint=rdzv_endpoint if multi_node else None,
        rdzv_id=spec.job_name,
        launcher=CONTAINER_TORCHRUN if backend == "kubernetes" else TORCHRUN,
    )
