"""What a training launch needs, what it returns, and how it fails.

One `LaunchSpec` drives both backends: `kubernetes` turns it into a Kubeflow PyTorchJob,
`local` into torchrun processes on this machine. Both run the same trainer command line
(`components.trainer_command`); only the environment differs, so training behaves the same on
one machine and on a cluster.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import time
from dataclasses import dataclass, field
from typing import Literal

from components.common.errors import CheckFailed, ConfigError
from components.trainer_command.launch_shape import processes_per_node

Backend = Literal["kubernetes", "local", "docker"]
CleanupPolicy = Literal["always", "on_success", "never"]
CleanPodPolicy = Literal["None", "Running", "All"]

BACKENDS: tuple[str, ...] = ("kubernetes", "local", "docker")
CLEANUP_POLICIES: tuple[str, ...] = ("always", "on_success", "never")
CLEAN_POD_POLICIES: tuple[str, ...] = ("None", "Running", "All")

# PyTorchJob names become pod and service names such as `<job>-worker-12`; services must be
# DNS-1035 labels (<= 63 chars, start with a letter), so the job name stays well below that.
MAX_JOB_NAME = 52
_INVALID = re.compile(r"[^a-z0-9-]+")


def job_name(run_id: str, prefix: str = "recap-train") -> str:
    """A valid, deterministic PyTorchJob name for one pipeline run.

    Made at run time from the run id, so every run (and every UI rerun, which gets a new run
    id) has its own job, and the cleanup step can derive the same name without being told.
    """
    run_id = run_id.strip().lower()
    if not run_id:
        raise ConfigError("launch: empty run id; pass --run-id or --job-name")
    slug = _INVALID.sub("-", f"{prefix}-{run_id}").strip("-")
    slug = re.sub(r"-{2,}", "-", slug)
    if not slug[0].isalpha():
        slug = f"j-{slug}"
    if len(slug) > MAX_JOB_NAME:
        digest = hashlib.sha256(run_id.encode()).hexdigest()[:8]
        slug = f"{slug[: MAX_JOB_NAME - 9].rstrip('-')}-{digest}"
    return slug


def fresh_run_id() -> str:
    """A run id for launches outside a pipeline (a person running `recap launch`)."""
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"


@dataclass(frozen=True)
class ElasticSpec:
    """torchrun elastic mode: the job may run on `min_replicas`..`max_replicas` nodes and restart.

    An elastic PyTorchJob has Worker replicas only (the training operator counts
    elasticPolicy.minReplicas/maxReplicas over Workers and puts the rendezvous at worker 0), so
    here replicas, nodes and Workers are one number.
    """

    min_replicas: int
    max_replicas: int
    max_restarts: int = 3
    rdzv_backend: str = "c10d"


@dataclass(frozen=True)
class PodRef:
    """The pod that launched a job (the KFP step's pod): the job's owner, so that Kubernetes
    deletes the job when that pod is deleted, even if the launcher never got to clean up."""

    name: str
    uid: str


# Requests of a training pod. With GPUs, per GPU: most of an 8-GPU A100/H100 node (96-208 vCPUs,
# 680 GB+) goes to the 8 ranks' tf.data parsing, CUDA contexts and prefetched batches; a smaller
# node (e.g. one L4 with 8 vCPUs) needs --cpu/--memory given.
CPU_PER_GPU = "10"
MEMORY_PER_GPU = "64Gi"
CPU_WITHOUT_GPUS = "2"
MEMORY_WITHOUT_GPUS = "8Gi"
# Environment the launcher forwards from its own to the trainer (NCCL's and torch's NCCL settings:
# network interface, debug level, plugins of a fast fabric); NCCL_DEBUG=WARN unless set.
PASSTHROUGH_ENV_PREFIXES = ("NCCL_", "TORCH_NCCL_")
GPU_ENV_DEFAULTS = (("NCCL_DEBUG", "WARN"),)
_QUANTITY = re.compile(r"^(\d+(?:\.\d+)?)(m|k|M|G|T|Ki|Mi|Gi|Ti)?$")


def scale_quantity(quantity: str, factor: int) -> str:
    """A Kubernetes quantity times `factor` ("10" x 8 = "80", "64Gi" x 8 = "512Gi", "500m" x 3 = "1500m")."""
    match = _QUANTITY.match(quantity.strip())
    if not match:
        raise ConfigError(f"launch: {quantity!r} is not a Kubernetes quantity such as 10, 500m or 64Gi")
    number = float(match.group(1)) * factor
    text = str(int(number)) if number.is_integer() else f"{number:g}"
    return f"{text}{match.group(2) or ''}"


def passthrough_env(environ: dict[str, str] | None = None) -> tuple[tuple[str, str], ...]:
    """NCCL_* and TORCH_NCCL_* of the launcher's environment, for the training pods."""
    import os

    environ = os.environ if environ is None else environ
    return tuple(sorted((k, v) for k, v in environ.items() if k.startswith(PASSTHROUGH_ENV_PREFIXES)))


def parse_env(text: str, what: str = "env") -> tuple[tuple[str, str], ...]:
    """`KEY=VALUE[,KEY=VALUE...]` (a pipeline parameter) as pairs; ConfigError naming a bad item."""
    pairs = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{what}: expected KEY=VALUE, got {item!r}")
        pairs.append((key.strip(), value))
    return tuple(pairs)


@dataclass(frozen=True)
class LaunchSpec:
    job_name: str
    image: str
    num_workers: int = 1  # nodes: 1 master + (num_workers - 1) workers
    procs_per_worker: int = 0  # 0: one process per GPU (one without GPUs)
    gpus_per_worker: int = 0
    cpu: str = ""  # "": CPU_PER_GPU per GPU, CPU_WITHOUT_GPUS without
    memory: str = ""  # "": MEMORY_PER_GPU per GPU, MEMORY_WITHOUT_GPUS without
    namespace: str = "kubeflow"
    env: tuple[tuple[str, str], ...] = ()
    service_account: str = ""  # workload identity: the KSA bound to a GCP service account
    gcs_secret: str = ""  # or: a Secret holding a GCP key as `key.json`
    # Whole-job restarts tolerated. The operator's backoffLimit sums container restarts over all
    # pods, and one fault in a c10d job restarts every node, so the job gets backoff_limit x nodes.
    backoff_limit: int = 3
    clean_pod_policy: str = "All"
    ttl_seconds_after_finished: int = 3600
    active_deadline_seconds: int | None = None
    elastic: ElasticSpec | None = None
    timeout_s: float = 24 * 3600.0
    poll_interval_s: float = 15.0
    cleanup: str = "always"
    log_tail_lines: int = 100
    labels: tuple[tuple[str, str], ...] = field(default=())
    owner: PodRef | None = None
    # tf.data service dataset workers started with the job (0: each rank reads its own input).
    data_service_workers: int = 0

    def __post_init__(self) -> None:
        def bad(message: str) -> None:
            raise ConfigError(f"launch: {message}")

        if self.num_workers < 1:
            bad(f"num_workers must be >= 1, got {self.num_workers}")
        if self.procs_per_worker < 0:
            bad(f"procs_per_worker must be >= 1 (or 0: one per GPU), got {self.procs_per_worker}")
        if self.gpus_per_worker < 0:
            bad(f"gpus_per_worker must be >= 0, got {self.gpus_per_worker}")
        gpus = self.gpus_per_worker
        # Resolved defaults (the dataclass is frozen: set once, here).
        object.__setattr__(self, "procs_per_worker", processes_per_node(self.procs_per_worker, gpus))
        if not self.cpu:
            object.__setattr__(self, "cpu", scale_quantity(CPU_PER_GPU, gpus) if gpus else CPU_WITHOUT_GPUS)
        if not self.memory:
            object.__setattr__(self, "memory", scale_quantity(MEMORY_PER_GPU, gpus) if gpus else MEMORY_WITHOUT_GPUS)
        if gpus:
            given = {k for k, _ in self.env}
            object.__setattr__(self, "env", (*self.env, *((k, v) for k, v in GPU_ENV_DEFAULTS if k not in given)))
        if gpus and self.procs_per_worker != gpus:  # each rank drives cuda:LOCAL_RANK, one GPU
            more = "exceeds" if self.procs_per_worker > gpus else "is below"
            bad(f"procs_per_worker ({self.procs_per_worker}) {more} gpus_per_worker ({gpus}): the trainer runs "
                "one process per GPU; leave procs_per_worker at 0 (one per GPU)")
        if self.backoff_limit < 0:
            bad(f"backoff_limit must be >= 0, got {self.backoff_limit}")
        if self.timeout_s <= 0 or self.poll_interval_s <= 0:
            bad("timeout and poll interval must be positive")
        if self.cleanup not in CLEANUP_POLICIES:
            bad(f"cleanup must be one of {', '.join(CLEANUP_POLICIES)}, got {self.cleanup!r}")
        if self.clean_pod_policy not in CLEAN_POD_POLICIES:
            bad(f"clean_pod_policy must be one of {', '.join(CLEAN_POD_POLICIES)}, got {self.clean_pod_policy!r}")
        if self.data_service_workers < 0:
            bad(f"data_service_workers must be >= 0, got {self.data_service_workers}")
        if self.service_account and self.gcs_secret:
            bad("use either service_account (workload identity) or gcs_secret, not both")
        if self.elastic is not None:
            e = self.elastic
            if not 1 <= e.min_replicas <= e.max_replicas:
                bad(f"elastic needs 1 <= min_replicas <= max_replicas, got {e.min_replicas}..{e.max_replicas}")
            if not e.min_replicas <= self.num_workers <= e.max_replicas:
                bad(f"num_workers {self.num_workers} outside elastic range {e.min_replicas}..{e.max_replicas}")

    @property
    def nnodes(self) -> int | str:
        """torchrun's --nnodes: a fixed count, or `min:max` for elastic jobs."""
        if self.elastic is not None:
            return f"{self.elastic.min_replicas}:{self.elastic.max_replicas}"
        return self.num_workers


@dataclass(frozen=True)
class LaunchResult:
    backend: str
    job_name: str
    status: str  # "Succeeded"
    seconds: float
    deleted: bool = False


class TrainingFailed(CheckFailed):
    """The training job ran and failed (or timed out, or was cancelled); names job and reason."""


class LaunchTimeout(TrainingFailed):
    """The job did not finish within our own deadline."""


class LaunchCancelled(TrainingFailed):
    """The launcher received SIGTERM/SIGINT (a cancelled pipeline run)."""
