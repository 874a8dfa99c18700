"""Build the Kubeflow PyTorchJob (kubeflow.org/v1) for a `LaunchSpec`, with the SDK's models.

Pure: no cluster calls. Every replica runs one pod template: the training image, the torchrun
command, env, resources (GPUs as `nvidia.com/gpu`), a memory-backed /dev/shm (NCCL and data
loaders need more than the default 64 MiB), Istio sidecars off (a sidecar keeps a finished pod
alive, so the job would never complete), and a runPolicy that bounds retries and
garbage-collects pods and the job itself.

Shapes the Training Operator (v1.9) accepts and runs as meant:
- fixed size: 1 Master + (nodes - 1) Workers; the operator gives every pod MASTER_ADDR/PORT.
- elastic: Workers only. The operator counts elasticPolicy.minReplicas/maxReplicas over
  Workers, puts the rendezvous at worker 0 (PET_RDZV_ENDPOINT), and its webhook refuses
  elasticPolicy.nProcPerNode together with spec.nprocPerNode, so only the latter is set.
- backoffLimit = backoff_limit x nodes: the operator compares it with the *sum* of container
  restarts over all running pods, and one fault in a c10d job restarts every node's container.
- an ownerReference to the launcher's pod when known (same namespace only: Kubernetes treats a
  cross-namespace owner as absent and would delete the job), so deleting the step pod deletes
  the job; no blockOwnerDeletion (that would need update rights on the pod's finalizers).
"""

from __future__ import annotations

from typing import Any

from components.launch.spec import LaunchSpec

CONTAINER_NAME = "pytorch"  # the training operator finds the trainer container by this name
GCS_KEY_MOUNT = "/var/secrets/google"
RUN_ID_LABEL = "recap.ai/run-id"
ISTIO_INJECT_ANNOTATION = "sidecar.istio.io/inject"


def _models():
    from kubeflow.training import models

    return models


def resources(spec: LaunchSpec) -> Any:
    models = _models()
    requests = {"cpu": spec.cpu, "memory": spec.memory}
    limits = {"cpu": spec.cpu, "memory": spec.memory}
    if spec.gpus_per_worker:
        limits["nvidia.com/gpu"] = str(spec.gpus_per_worker)
        requests["nvidia.com/gpu"] = str(spec.gpus_per_worker)
    return models.V1ResourceRequirements(requests=requests, limits=limits)


def pod_template(spec: LaunchSpec, command: list[str]) -> Any:
    models = _models()
    env = [models.V1EnvVar(name=k, value=v) for k, v in spec.env]
    env.append(models.V1EnvVar(name="PYTHONUNBUFFERED", value="1"))
    mounts = [models.V1VolumeMount(name="dshm", mount_path="/dev/shm")]
    volumes = [models.V1Volume(name="dshm", empty_dir=models.V1EmptyDirVolumeSource(medium="Memory"))]
    if spec.gcs_secret:
        mounts.append(models.V1VolumeMount(name="gcs-key", mount_path=GCS_KEY_MOUNT, read_only=True))
        volumes.append(models.V1Volume(name="gcs-key", secret=models.V1SecretVolumeSource(secret_name=spec.gcs_secret)))
        env.append(models.V1EnvVar(name="GOOGLE_APPLICATION_CREDENTIALS", value=f"{GCS_KEY_MOUNT}/key.json"))
    container = models.V1Container(
        name=CONTAINER_NAME,
        image=spec.image,
        image_pull_policy="IfNotPresent",
        command=list(command[:1]),
        args=list(command[1:]),
        env=env,
        resources=resources(spec),
        volume_mounts=mounts,
    )
    tolerations = None
    if spec.gpus_per_worker:
        tolerations = [models.V1Toleration(key="nvidia.com/gpu", operator="Exists", effect="NoSchedule")]
    labels = {RUN_ID_LABEL: spec.job_name, **dict(spec.labels)}
    return models.V1PodTemplateSpec(
        metadata=models.V1ObjectMeta(labels=labels, annotations={ISTIO_INJECT_ANNOTATION: "false"}),
        spec=models.V1PodSpec(
            containers=[container],
            volumes=volumes,
            tolerations=tolerations,
            service_account_name=spec.service_account or None,
        ),
    )


DEADLINE_MARGIN_S = 600


def active_deadline(spec: LaunchSpec) -> int:
    """The operator kills the job after this, even if no launcher is left to delete it
    (a launcher pod killed without SIGTERM reaching us): our timeout plus a margin."""
    if spec.active_deadline_seconds is not None:
        return spec.active_deadline_seconds
    return int(spec.timeout_s) + DEADLINE_MARGIN_S


def operator_backoff_limit(spec: LaunchSpec) -> int:
    """runPolicy.backoffLimit for `spec.backoff_limit` whole-job restarts of `num_workers` nodes."""
    return spec.backoff_limit * spec.num_workers


def replica_counts(spec: LaunchSpec) -> dict[str, int]:
    """Replica type -> replicas: Workers only for elastic jobs, else 1 Master + Workers."""
    if spec.elastic is not None:
        return {"Worker": spec.num_workers}
    return {"Master": 1, **({"Worker": spec.num_workers - 1} if spec.num_workers > 1 else {})}


def build_pytorchjob(spec: LaunchSpec, command: list[str]) -> Any:
    """The PyTorchJob object (KubeflowOrgV1PyTorchJob) that runs `command` on every node."""
    models = _models()
    template = pod_template(spec, command)
    replicas = {
        kind: models.KubeflowOrgV1ReplicaSpec(replicas=count, restart_policy="OnFailure", template=template)
        for kind, count in replica_counts(spec).items()
    }
    elastic = None
    if spec.elastic is not None:
        elastic = models.KubeflowOrgV1ElasticPolicy(
            min_replicas=spec.elastic.min_replicas,
            max_replicas=spec.elastic.max_replicas,
            max_restarts=spec.elastic.max_restarts,
            rdzv_backend=spec.elastic.rdzv_backend,
        )
    run_policy = models.KubeflowOrgV1RunPolicy(
        backoff_limit=operator_backoff_limit(spec),
        clean_pod_policy=spec.clean_pod_policy,
        ttl_seconds_after_finished=spec.ttl_seconds_after_finished,
        active_deadline_seconds=active_deadline(spec),
    )
    return models.KubeflowOrgV1PyTorchJob(
        api_version="kubeflow.org/v1",
        kind="PyTorchJob",
        metadata=models.V1ObjectMeta(
            name=spec.job_name,
            namespace=spec.namespace,
            labels={RUN_ID_LABEL: spec.job_name, "app.kubernetes.io/name": "recap-train", **dict(spec.labels)},
            owner_references=_owner(spec),
        ),
        spec=models.KubeflowOrgV1PyTorchJobSpec(
            pytorch_replica_specs=replicas,
            nproc_per_node=str(spec.procs_per_worker),
            run_policy=run_policy,
            elastic_policy=elastic,
        ),
    )


def _owner(spec: LaunchSpec) -> list[Any] | None:
    if spec.owner is None:
        return None
    models = _models()
    return [models.V1OwnerReference(api_version="v1", kind="Pod", name=spec.owner.name, uid=spec.owner.uid)]


def to_manifest(job: Any) -> dict[str, Any]:
    """The JSON body the API server receives (for dry runs, logs and tests)."""
    from kubernetes.client import ApiClient

    return ApiClient().sanitize_for_serialization(job)
