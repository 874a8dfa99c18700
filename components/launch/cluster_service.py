"""The tf.data service of a PyTorchJob on Kubernetes: a dispatcher Pod, N dataset worker Pods and
a Service, all owned by the job, so Kubernetes' garbage collector deletes them with it.

What is created, and why this shape:
- The dispatcher is a bare Pod (restartPolicy Always), not a Deployment. Its journal lives in an
  emptyDir, which outlives a crashed container of the same pod (the kubelet restarts it in place
  and the dispatcher recovers its jobs from the journal) but not a rescheduled pod. A Deployment
  would replace a lost pod with an empty journal, which the consumers' job could not survive
  anyway, and would need `create deployments` besides; a bare Pod needs only `create pods`.
- The workers are bare Pods too: stateless and interchangeable. A worker that dies is restarted
  in place; one whose pod is gone leaves the others to serve the job (the dispatcher reassigns).
- The Service `<job>-dispatcher` gives the dispatcher a stable name:
  `grpc://<job>-dispatcher.<namespace>.svc:5050` is what the trainer gets. Workers need no
  Service: each registers `$(POD_IP):5051` (downward API) with the dispatcher, and consumers
  connect to that pod IP directly.
- ownerReferences: `{kubeflow.org/v1 PyTorchJob <job>, uid, controller: true}` with the uid read
  back from the created job (the garbage collector matches owners by uid; a wrong one counts as
  an absent owner and gets the object deleted at once). No blockOwnerDeletion: it only matters
  for a foreground delete of the job (the launcher deletes in the background), and on clusters
  with the OwnerReferencesPermissionEnforcement admission plugin it needs `update` on
  `pytorchjobs/finalizers`, a grant beyond what the launcher creates.
- Every pod carries the job's activeDeadlineSeconds: a backstop should nothing delete them.

Removal: deleting the job (the launcher's cleanup, its TTL, the garbage collector following the
launcher's pod) removes them by garbage collection. When the launcher keeps the job (cleanup
`never`, or `on_success` after a failure) it deletes them itself: a kept job is for reading its
pods' logs, and an idle service would hold its CPUs until the job's TTL.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from components.launch.pytorchjob import (
    GCS_KEY_MOUNT,
    ISTIO_INJECT_ANNOTATION,
    RUN_ID_LABEL,
    active_deadline,
)
from components.launch.spec import LaunchSpec, TrainingFailed

log = logging.getLogger(__name__)

DISPATCHER_PORT = 5050
WORKER_PORT = 5051
JOURNAL_DIR = "/var/run/recap-data-service/journal"
COMPONENT_LABEL = "app.kubernetes.io/component"
NAME_LABEL = "app.kubernetes.io/name"
SERVICE_APP = "recap-data-service"
# CPU-only pods: the dispatcher only hands out splits; a worker reads, parses and batches.
DISPATCHER_RESOURCES = {"cpu": "500m", "memory": "1Gi"}
WORKER_RESOURCES = {"cpu": "2", "memory": "4Gi"}
# The trainer waits this long for the dispatcher's Service to answer: the service pods are
# created after the job (they need its uid) and may wait for a node and an image pull.
CLUSTER_CONNECT_TIMEOUT_S = 600.0
REQUEST_TIMEOUT_S = 60


def service_name(job: str) -> str:
    """`<job>-dispatcher`: a DNS-1035 label of at most 63 characters (job names are at most 52)."""
    return f"{job}-dispatcher"


def dispatcher_address(spec: LaunchSpec) -> str:
    return f"grpc://{service_name(spec.job_name)}.{spec.namespace}.svc:{DISPATCHER_PORT}"


def worker_pod_name(job: str, index: int) -> str:
    return f"{job}-data-worker-{index}"


@dataclass(frozen=True)
class ServiceObjects:
    """What was created, by kind and name (for deleting it when the job is kept)."""

    pods: tuple[str, ...]
    services: tuple[str, ...]


def owner_reference(job_name: str, job_uid: str) -> dict[str, Any]:
    return {"apiVersion": "kubeflow.org/v1", "kind": "PyTorchJob", "name": job_name, "uid": job_uid,
            "controller": True}


def _metadata(spec: LaunchSpec, name: str, component: str, owner: dict[str, Any]) -> dict[str, Any]:
    labels = {RUN_ID_LABEL: spec.job_name, NAME_LABEL: SERVICE_APP, COMPONENT_LABEL: component, **dict(spec.labels)}
    return {"name": name, "namespace": spec.namespace, "labels": labels, "ownerReferences": [owner],
            "annotations": {ISTIO_INJECT_ANNOTATION: "false"}}


def _pod(spec: LaunchSpec, name: str, component: str, owner: dict[str, Any], args: list[str], port: int,
         resources: dict[str, str], env: list[dict[str, Any]], volumes: list[tuple[dict, dict]]) -> dict[str, Any]:
    """A service pod from the training image, with the job's env, credentials and deadline."""
    env = [*({"name": k, "value": v} for k, v in spec.env), {"name": "PYTHONUNBUFFERED", "value": "1"}, *env]
    if spec.gcs_secret:  # the workers read the shards themselves
        volumes = [*volumes, ({"name": "gcs-key", "secret": {"secretName": spec.gcs_secret}},
                              {"name": "gcs-key", "mountPath": GCS_KEY_MOUNT, "readOnly": True})]
        env.append({"name": "GOOGLE_APPLICATION_CREDENTIALS", "value": f"{GCS_KEY_MOUNT}/key.json"})
    container = {
        "name": component, "image": spec.image, "imagePullPolicy": "IfNotPresent",
        "command": ["recap", "data-service", component], "args": args, "env": env,
        "ports": [{"name": "grpc", "containerPort": port}],
        "readinessProbe": {"tcpSocket": {"port": "grpc"}, "periodSeconds": 5},
        "resources": {"requests": dict(resources), "limits": dict(resources)},
        "volumeMounts": [mount for _, mount in volumes],
    }
    pod_spec: dict[str, Any] = {"containers": [container], "restartPolicy": "Always",
                                "activeDeadlineSeconds": active_deadline(spec),
                                "volumes": [volume for volume, _ in volumes]}
    if spec.service_account:
        pod_spec["serviceAccountName"] = spec.service_account
    return {"apiVersion": "v1", "kind": "Pod", "metadata": _metadata(spec, name, component, owner), "spec": pod_spec}


def build_service_objects(spec: LaunchSpec, job_uid: str) -> list[dict[str, Any]]:
    """The dispatcher Pod, its Service and the worker Pods (in creation order) for one job."""
    owner = owner_reference(spec.job_name, job_uid)
    journal = ({"name": "journal", "emptyDir": {}}, {"name": "journal", "mountPath": JOURNAL_DIR})
    dispatcher = _pod(spec, service_name(spec.job_name), "dispatcher", owner,
                      [f"--port={DISPATCHER_PORT}", f"--journal-dir={JOURNAL_DIR}"], DISPATCHER_PORT,
                      DISPATCHER_RESOURCES, [], [journal])
    service = {
        "apiVersion": "v1", "kind": "Service",
        "metadata": _metadata(spec, service_name(spec.job_name), "dispatcher", owner),
        "spec": {"type": "ClusterIP",
                 "selector": {RUN_ID_LABEL: spec.job_name, COMPONENT_LABEL: "dispatcher"},
                 "ports": [{"name": "grpc", "port": DISPATCHER_PORT, "targetPort": "grpc", "protocol": "TCP"}]},
    }
    pod_ip = {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}
    workers = [
        _pod(spec, worker_pod_name(spec.job_name, index), "worker", owner,
             [f"--dispatcher={dispatcher_address(spec)}", f"--port={WORKER_PORT}", "--worker-host=$(POD_IP)"],
             WORKER_PORT, WORKER_RESOURCES, [pod_ip], [])
        for index in range(spec.data_service_workers)
    ]
    return [dispatcher, service, *workers]


def _status(exc: BaseException) -> int | None:
    status = getattr(exc, "status", None)
    return int(status) if isinstance(status, int) else None


def create_service(client: Any, spec: LaunchSpec, job_uid: str) -> ServiceObjects:
    """Create the service objects owned by the job `job_uid`. One left by an earlier attempt of
    the same run (409) is kept. Any other refusal is a TrainingFailed naming the object."""
    core = client.core_api
    pods: list[str] = []
    services: list[str] = []
    for body in build_service_objects(spec, job_uid):
        kind, name = body["kind"], body["metadata"]["name"]
        create = core.create_namespaced_pod if kind == "Pod" else core.create_namespaced_service
        try:
            create(namespace=spec.namespace, body=body, _request_timeout=REQUEST_TIMEOUT_S)
        except Exception as exc:
            if _status(exc) != 409:
                delete_service(client, spec, ServiceObjects(tuple(pods), tuple(services)))  # no half service
                raise TrainingFailed(f"data service of PyTorchJob {spec.namespace}/{spec.job_name}: cannot create "
                                     f"{kind} {name} ({_status(exc)}): {getattr(exc, 'reason', exc)}") from exc
            log.warning("%s %s/%s exists from an earlier attempt of this run: keeping it", kind, spec.namespace, name)
        (pods if kind == "Pod" else services).append(name)
    log.info("data service for PyTorchJob %s/%s: %s, %d worker pod(s), owned by the job", spec.namespace,
             spec.job_name, dispatcher_address(spec), spec.data_service_workers)
    return ServiceObjects(tuple(pods), tuple(services))


def delete_service(client: Any, spec: LaunchSpec, objects: ServiceObjects) -> None:
    """Delete what `create_service` made (a kept job's service); gone already is fine."""
    core = client.core_api
    for kind, names, delete in (("Pod", objects.pods, core.delete_namespaced_pod),
                                ("Service", objects.services, core.delete_namespaced_service)):
        for name in names:
            try:
                delete(name=name, namespace=spec.namespace, _request_timeout=REQUEST_TIMEOUT_S)
            except Exception as exc:
                if _status(exc) != 404:
                    log.error("could not delete %s %s/%s: %s (it goes when the job is deleted)", kind,
                              spec.namespace, name, exc)
    log.info("data service of PyTorchJob %s/%s deleted", spec.namespace, spec.job_name)
