"""`recap launch`: start training on Kubernetes (PyTorchJob) or locally; also the launcher image's ENTRYPOINT."""

from __future__ import annotations

import argparse
import json
import os

from components.common.errors import ConfigError
from components.launch.spec import (
    BACKENDS,
    CLEAN_POD_POLICIES,
    CLEANUP_POLICIES,
    CPU_PER_GPU,
    CPU_WITHOUT_GPUS,
    MEMORY_PER_GPU,
    MEMORY_WITHOUT_GPUS,
    ElasticSpec,
    LaunchSpec,
    fresh_run_id,
    job_name,
    passthrough_env,
)
from components.trainer_command.flags import TrainerArgs, add_trainer_arguments, flag_values

# A launched trainer runs elsewhere (a PyTorchJob, fresh processes): its data and outputs are
# given explicitly, never taken from the YAML's local defaults.
REQUIRED_FLAGS = ("train_data", "validation_data", "save_dir", "model_dir")


def _pairs(values: list[str], flag: str) -> tuple[tuple[str, str], ...]:
    out = []
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"launch: {flag} expects KEY=VALUE, got {item!r}")
        out.append((key, value))
    return tuple(out)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--backend", choices=BACKENDS, default="local", help="where to run (default: local)")
    add_trainer_arguments(parser.add_argument_group("trainer (passed to python -m components.train)"),
                          config_required=False)
    job = parser.add_argument_group("job")
    job.add_argument("--run-id", default="", help="pipeline run id; the job name is derived from it")
    job.add_argument("--job-name", default="", help="explicit job name (default: recap-train-<run id>)")
    job.add_argument("--image", default=os.environ.get("RECAP_TRAIN_IMAGE", ""), help="training image (kubernetes)")
    job.add_argument("--num-workers", type=int, default=1, help="nodes: 1 master + N-1 workers")
    job.add_argument("--procs-per-worker", type=int, default=0,
                     help="torchrun --nproc_per_node (default 0: one per GPU, one without GPUs)")
    job.add_argument("--gpus-per-worker", type=int, default=0)
    job.add_argument("--cpu", default="", help=f"CPUs per node (default: {CPU_PER_GPU} per GPU, {CPU_WITHOUT_GPUS} without)")
    job.add_argument("--memory", default="",
                     help=f"memory per node (default: {MEMORY_PER_GPU} per GPU, {MEMORY_WITHOUT_GPUS} without)")
    job.add_argument("--data-service-workers", type=int, default=0,
                     help="tf.data service dataset workers started with the job, with a dispatcher (0: in-process reading)")
    job.add_argument("--namespace", default=os.environ.get("RECAP_NAMESPACE", "kubeflow"))
    job.add_argument("--env", action="append", default=[],
                     help="KEY=VALUE for the trainer (repeatable); NCCL_* and TORCH_NCCL_* of this shell are passed too")
    job.add_argument("--service-account", default="", help="pod service account (workload identity)")
    job.add_argument("--gcs-secret", default="", help="Secret with a GCP key as key.json")
    job.add_argument("--backoff-limit", type=int, default=3,
                     help="whole-job restarts before the job fails (runPolicy.backoffLimit = this x nodes)")
    job.add_argument("--clean-pod-policy", choices=CLEAN_POD_POLICIES, default="All")
    job.add_argument("--ttl-seconds-after-finished", type=int, default=3600)
    job.add_argument("--active-deadline-seconds", type=int, default=None,
                     help="operator-enforced limit (default: --timeout + 600)")
    job.add_argument("--elastic-min", type=int, default=0,
                     help="elastic: min nodes (0 = not elastic); elastic jobs run Worker replicas only")
    job.add_argument("--elastic-max", type=int, default=0, help="elastic: max nodes")
    job.add_argument("--max-restarts", type=int, default=3, help="elastic: torchrun --max_restarts")
    job.add_argument("--timeout", type=float, default=24 * 3600.0, help="seconds to wait for the job")
    job.add_argument("--poll-interval", type=float, default=15.0, help="seconds between status polls")
    job.add_argument("--cleanup", choices=CLEANUP_POLICIES, default="always", help="delete the job when done")
    job.add_argument("--log-tail-lines", type=int, default=100)
    job.add_argument("--kubeconfig", default=os.environ.get("KUBECONFIG") or None)
    job.add_argument("--skip-data-check", action="store_true",
                     help="do not read the first records of each split against the data contract before launching")
    action = parser.add_mutually_exclusive_group()
    action.add_argument("--dry-run", action="store_true", help="print the PyTorchJob manifest (JSON) and exit")
    action.add_argument("--delete", action="store_true", help="only delete the run's job (cleanup)")


def spec_from_args(args: argparse.Namespace) -> LaunchSpec:
    elastic = None
    if args.elastic_min or args.elastic_max:
        elastic = ElasticSpec(min_replicas=args.elastic_min, max_replicas=args.elastic_max or args.num_workers,
                              max_restarts=args.max_restarts)
    name = args.job_name or job_name(args.run_id or fresh_run_id())
    return LaunchSpec(
        job_name=name, image=args.image, num_workers=args.num_workers, procs_per_worker=args.procs_per_worker,
        gpus_per_worker=args.gpus_per_worker, cpu=args.cpu, memory=args.memory, namespace=args.namespace,
        env=(*passthrough_env(), *_pairs(args.env, "--env")), service_account=args.service_account, gcs_secret=args.gcs_secret,
        backoff_limit=args.backoff_limit, clean_pod_policy=args.clean_pod_policy,
        ttl_seconds_after_finished=args.ttl_seconds_after_finished,
        active_deadline_seconds=args.active_deadline_seconds, elastic=elastic, timeout_s=args.timeout,
        poll_interval_s=args.poll_interval, cleanup=args.cleanup, log_tail_lines=args.log_tail_lines,
        data_service_workers=args.data_service_workers,
    )


def run(args: argparse.Namespace) -> int:
    from components.launch import run as launch
    from components.launch.command import trainer_command

    spec = spec_from_args(args)
    if args.delete:
        from components.launch.cluster import delete_job

        delete_job(spec.job_name, spec.namespace, kubeconfig=args.kubeconfig)
        return 0
    missing = [f"--{k.replace('_', '-')}" for k in ("config_path", *REQUIRED_FLAGS) if not getattr(args, k)]
    if missing:
        raise ConfigError(f"launch: missing {', '.join(missing)}")
    trainer = TrainerArgs.of(args.config_path, args.debug_loop, **flag_values(args))
    if args.dry_run:
        from components.launch import check_shape
        from components.launch.pytorchjob import build_pytorchjob, to_manifest

        check_shape(spec, trainer, args.backend)
        if spec.data_service_workers:
            from components.launch import with_cluster_service

            trainer = with_cluster_service(spec, trainer)

        print(json.dumps(to_manifest(build_pytorchjob(spec, trainer_command(spec, trainer, "kubernetes"))), indent=2))
        return 0
    result = launch(spec, trainer, backend=args.backend, kubeconfig=args.kubeconfig,
                    data_check=not args.skip_data_check)
    print(json.dumps({"job_name": result.job_name, "backend": result.backend, "status": result.status,
                      "seconds": round(result.seconds, 1)}))
    return 0
