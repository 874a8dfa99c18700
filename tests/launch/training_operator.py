"""A model of the Kubeflow Training Operator v1.9 PyTorchJob controller, its defaulting and its
validating webhook, and of the kubelet under it: what tests/launch/fake_k8s.py serves.

Written from reading the operator's source, in our own words. What it encodes:
- webhook: the job name is a DNS-1035 label; a Master has exactly 1 replica, a Worker at least
  1; only Master/Worker replica types; every replica has a container named `pytorch` with an
  image; with an elasticPolicy a Worker replica spec is required, and elasticPolicy.nProcPerNode
  together with spec.nprocPerNode is forbidden.
- defaults: cleanPodPolicy None, replicas 1, restartPolicy OnFailure, the `pytorchjob-port`
  23456 on the pytorch container, elastic min/max from each other or the Worker replicas,
  nprocPerNode "auto" unless elasticPolicy.nProcPerNode is set.
- pod env (setPodEnv): MASTER_ADDR/PORT, PET_MASTER_*, WORLD_SIZE, RANK, PET_NODE_RANK when
  there is a Master; PET_NPROC_PER_NODE from spec.nprocPerNode; PET_NNODES (`min:max` when
  elastic) and, when elastic, PET_RDZV_ENDPOINT `<job>-worker-0:<port>` and PET_RDZV_BACKEND.
- kubelet: under restartPolicy OnFailure a failing container is first reported terminated,
  then restarted in place: restartCount + 1, lastState terminated, the pod stays Running;
  the previous instance's log is readable with `previous=true`. Under Never the pod fails.
- each reconcile, in the controller's order: a finished job gets its pods cleaned up per
  cleanPodPolicy, then is deleted once ttlSecondsAfterFinished has passed since completion;
  an unfinished one fails when the restartCounts of its running pods sum to backoffLimit or
  more (any restart when it is 0) or when activeDeadlineSeconds have passed since its start:
  the controller then deletes *every* pod (whatever cleanPodPolicy says) and only after that
  writes the Failed condition. Otherwise Running while the Master runs, Succeeded when the
  Master succeeds (for a Worker-only elastic job: when a Worker succeeds), Failed "because N
  <type> replica(s) failed" when a pod failed under restartPolicy Never. Failed is sticky.
"""

from __future__ import annotations

import copy
import datetime as dt
import re
from dataclasses import dataclass, field
from typing import Any

JOB_NAME_LABEL = "training.kubeflow.org/job-name"
REPLICA_TYPE_LABEL = "training.kubeflow.org/replica-type"
REPLICA_INDEX_LABEL = "training.kubeflow.org/replica-index"
JOB_ROLE_LABEL = "training.kubeflow.org/job-role"
CONTAINER = "pytorch"
PORT_NAME, DEFAULT_PORT = "pytorchjob-port", 23456
WEBHOOK = "validator.pytorchjob.training-operator.kubeflow.org"
DNS_1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
RESTART_COUNTED = ("OnFailure", "Always", "ExitCode")


def rfc3339(when: dt.datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


# ---------------------------------------------------------------------------- webhook and defaults


def webhook_errors(job: dict[str, Any]) -> list[str]:
    """The validating webhook's field errors for a create (empty: admitted)."""
    errors = []
    name = job.get("metadata", {}).get("name", "")
    if len(name) > 63 or not DNS_1035.match(name):
        errors.append(f"metadata.name: Invalid value: {name!r}: should match DNS-1035 label")
    spec = job.get("spec", {})
    replicas = spec.get("pytorchReplicaSpecs")
    elastic = spec.get("elasticPolicy")
    if elastic is not None:
        if "Worker" not in (replicas or {}):
            errors.append("spec.pytorchReplicaSpecs[Worker]: Required value: must be configured if elastic policy is used")
        if elastic.get("nProcPerNode") is not None and spec.get("nprocPerNode") is not None:
            errors.append("spec.elasticPolicy.nProcPerNode: Forbidden: must not be used with spec.nprocPerNode")
    if replicas is None:
        errors.append("spec.pytorchReplicaSpecs: Required value: must be required")
    for kind, replica in (replicas or {}).items():
        path = f"spec.pytorchReplicaSpecs[{kind}]"
        if kind not in ("Master", "Worker"):
            errors.append(f'{path}: Unsupported value: "{kind}": supported values: "Master", "Worker"')
        containers = ((replica or {}).get("template", {}).get("spec", {}) or {}).get("containers") or []
        if not containers:
            errors.append(f"{path}.template.spec.containers: Required value: must be specified")
        for index, container in enumerate(containers):
            if not container.get("image"):
                errors.append(f"{path}.template.spec.containers[{index}].image: Required value: must be required")
        if not any(c.get("name") == CONTAINER for c in containers):
            errors.append(f"{path}.template.spec.containers: Required value: must have at least one container "
                          f"with name {CONTAINER}")
        count = (replica or {}).get("replicas")
        if kind == "Master" and count != 1:
            errors.append(f"{path}.replicas: Forbidden: must be 1")
        elif kind != "Master" and count is not None and count < 1:
            errors.append(f"{path}.replicas: Forbidden: must be at least 1")
    return errors


def denial_message(errors: list[str]) -> str:
    """How the API server words a webhook denial (an aggregate of the field errors)."""
    reason = errors[0] if len(errors) == 1 else "[" + ", ".join(errors) + "]"
    return f'admission webhook "{WEBHOOK}" denied the request: {reason}'


def with_defaults(job: dict[str, Any]) -> dict[str, Any]:
    job = copy.deepcopy(job)
    spec = job["spec"]
    spec.setdefault("runPolicy", {}).setdefault("cleanPodPolicy", "None")
    for replica in spec["pytorchReplicaSpecs"].values():
        replica.setdefault("replicas", 1)
        replica.setdefault("restartPolicy", "OnFailure")
        for container in replica["template"]["spec"]["containers"]:
            if container["name"] == CONTAINER and not any(p.get("name") == PORT_NAME for p in container.get("ports", [])):
                container.setdefault("ports", []).append({"name": PORT_NAME, "containerPort": DEFAULT_PORT})
    elastic = spec.get("elasticPolicy")
    if elastic is not None:
        if elastic.get("minReplicas") is None and elastic.get("maxReplicas") is None:
            workers = spec["pytorchReplicaSpecs"]["Worker"]["replicas"]
            elastic["minReplicas"] = elastic["maxReplicas"] = workers
        elastic.setdefault("minReplicas", elastic.get("maxReplicas"))
        elastic.setdefault("maxReplicas", elastic.get("minReplicas"))
    if elastic is None or elastic.get("nProcPerNode") is None:
        spec.setdefault("nprocPerNode", "auto")
    return job


def pod_env(job: dict[str, Any], replica_type: str, index: int) -> dict[str, str]:
    """The env the operator adds to the pytorch container of one replica (after defaults)."""
    spec = job["spec"]
    replicas = spec["pytorchReplicaSpecs"]
    name = job["metadata"]["name"]
    total = sum(r["replicas"] for r in replicas.values())
    nproc = spec.get("nprocPerNode")
    env = {"PYTHONUNBUFFERED": "1"}
    if "Master" in replicas:
        port = str(_port(replicas["Master"]))
        rank = index + (1 if replica_type == "Worker" else 0)
        env.update({"MASTER_PORT": port, "PET_MASTER_PORT": port, "MASTER_ADDR": f"{name}-master-0",
                    "PET_MASTER_ADDR": f"{name}-master-0",
                    "WORLD_SIZE": str(total * (int(nproc) if str(nproc).isdigit() else 1)),
                    "RANK": str(rank), "PET_NODE_RANK": str(rank)})
    if nproc is not None:
        env["PET_NPROC_PER_NODE"] = str(nproc)
    elastic = spec.get("elasticPolicy")
    if elastic is not None:
        env["PET_RDZV_ENDPOINT"] = f"{elastic.get('rdzvHost') or name + '-worker-0'}:" \
                                   f"{elastic.get('rdzvPort') or _port(replicas['Worker'])}"
        env["PET_RDZV_BACKEND"] = elastic.get("rdzvBackend") or "c10d"
        env["PET_NNODES"] = f"{elastic['minReplicas']}:{elastic['maxReplicas']}"
        if elastic.get("maxRestarts") is not None:
            env["PET_MAX_RESTARTS"] = str(elastic["maxRestarts"])
        if elastic.get("nProcPerNode") is not None:
            env["PET_NPROC_PER_NODE"] = str(elastic["nProcPerNode"])
    else:
        env["PET_NNODES"] = str(total)
    return env


def _port(replica: dict[str, Any]) -> int:
    for container in replica["template"]["spec"]["containers"]:
        for port in container.get("ports", []):
            if container["name"] == CONTAINER and port.get("name") == PORT_NAME:
                return int(port["containerPort"])
    raise ValueError("port not found")


# ---------------------------------------------------------------------------- scenarios


@dataclass(frozen=True)
class Crash:
    """At reconcile `at`, the trainer in pod `<job>-<pod>` exits (`reason`, `exit_code`, `log` as
    its last line). With `cascade`, every other running pod's trainer then exits with Error/1,
    as c10d peers do when one node dies (torchrun --max-restarts=0)."""

    at: int
    pod: str = "worker-0"
    reason: str = "OOMKilled"
    exit_code: int = 137
    log: str = "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB"
    cascade: bool = True


@dataclass(frozen=True)
class Scenario:
    """How a job's containers behave: Pending for `pending_ticks` reconciles, then the trainer
    runs `run_ticks` reconciles and completes (None: runs forever), with `crashes` on the way."""

    pending_ticks: int = 1
    run_ticks: int | None = 2
    crashes: tuple[Crash, ...] = ()
    unschedulable: str = ""  # the scheduler's message while pods are Pending, e.g. too few GPUs


SUCCEEDS = Scenario()
RUNS_FOREVER = Scenario(run_ticks=None)


def crash_loop(every: int = 3, rounds: int = 10, **crash: Any) -> Scenario:
    """A fault that comes back every `every` reconciles (a deterministic OOM, a bad config)."""
    return Scenario(run_ticks=None, crashes=tuple(Crash(at=2 + every * (i + 1), **crash) for i in range(rounds)))


# ---------------------------------------------------------------------------- the controller


@dataclass
class Pod:
    name: str
    replica_type: str
    index: int
    restart_policy: str
    uid: str
    created_tick: int
    phase: str = "Pending"
    restart_count: int = 0
    state: dict[str, Any] = field(default_factory=lambda: {"waiting": {"reason": "ContainerCreating"}})
    last_state: dict[str, Any] = field(default_factory=dict)
    started_tick: int = -1
    log: list[str] = field(default_factory=list)
    previous_log: list[str] | None = None
    restart_at: int | None = None  # the kubelet restarts the exited container at this tick


class OperatorJob:
    """One PyTorchJob as the controller and the kubelets under it see it."""

    def __init__(self, body: dict[str, Any], scenario: Scenario, created: dt.datetime) -> None:
        self.body = body
        self.job = with_defaults(body)
        self.scenario = scenario
        self.name = body["metadata"]["name"]
        self.ticks = 0
        self.pods: dict[str, Pod] = {}
        self.conditions: list[dict[str, Any]] = []
        self.start_time: dt.datetime | None = None
        self.completion_time: dt.datetime | None = None
        self.deleted = False
        self.set_condition("Created", "PyTorchJobCreated", f"PyTorchJob {self.name} is created.", created)

    # ------------------------------------------------------------------ status

    @property
    def run_policy(self) -> dict[str, Any]:
        return self.job["spec"].get("runPolicy", {})

    def finished(self) -> bool:
        return any(c["type"] in ("Succeeded", "Failed") and c["status"] == "True" for c in self.conditions)

    def set_condition(self, kind: str, reason: str, message: str, now: dt.datetime) -> None:
        if any(c["type"] == "Failed" and c["status"] == "True" for c in self.conditions):
            return  # Failed is sticky
        kept = []
        for condition in self.conditions:
            if condition["type"] == kind or {kind, condition["type"]} == {"Running", "Restarting"}:
                continue
            if kind in ("Succeeded", "Failed") and condition["type"] == "Running":
                condition = {**condition, "status": "False"}
            kept.append(condition)
        stamp = rfc3339(now)
        self.conditions = [*kept, {"type": kind, "status": "True", "reason": reason, "message": message,
                                   "lastUpdateTime": stamp, "lastTransitionTime": stamp}]

    def status_json(self) -> dict[str, Any]:
        status: dict[str, Any] = {"conditions": [dict(c) for c in self.conditions]}
        if self.start_time:
            status["startTime"] = rfc3339(self.start_time)
        if self.completion_time:
            status["completionTime"] = rfc3339(self.completion_time)
        return status

    # ------------------------------------------------------------------ one reconcile

    def reconcile(self, now: dt.datetime, uid: Any) -> None:
        self.ticks += 1
        if self.finished():
            self.clean_up(now)
            return
        self.kubelet(now)
        limit = self.run_policy.get("backoffLimit")
        deadline = self.run_policy.get("activeDeadlineSeconds")
        message = None
        if limit is not None and self.past_backoff_limit(int(limit)):
            message = f"Job {self.name} has failed because it has reached the specified backoff limit"
        elif deadline is not None and self.start_time and (now - self.start_time).total_seconds() >= int(deadline):
            message = f"Job {self.name} has failed because it was active longer than specified deadline"
        if message is not None:
            self.completion_time = self.completion_time or now
            self.pods.clear()  # every pod, before the condition is written
            self.set_condition("Failed", "PyTorchJobFailed", message, now)
            return
        if not self.pods:
            self.create_pods(uid)
        self.update_status(now)

    def past_backoff_limit(self, limit: int) -> bool:
        policies = {kind: r["restartPolicy"] for kind, r in self.job["spec"]["pytorchReplicaSpecs"].items()}
        restarts = sum(p.restart_count for p in self.pods.values()
                       if p.phase == "Running" and policies[p.replica_type] in RESTART_COUNTED)
        return restarts > 0 if limit == 0 else restarts >= limit

    def clean_up(self, now: dt.datetime) -> None:
        policy = self.run_policy.get("cleanPodPolicy", "None")
        if policy == "All":
            self.pods.clear()
        elif policy == "Running":
            self.pods = {n: p for n, p in self.pods.items() if p.phase not in ("Running", "Pending")}
        ttl = self.run_policy.get("ttlSecondsAfterFinished")
        if ttl is not None and self.completion_time and now > self.completion_time + dt.timedelta(seconds=int(ttl)):
            self.deleted = True

    def create_pods(self, uid: Any) -> None:
        for kind, replica in self.job["spec"]["pytorchReplicaSpecs"].items():
            for index in range(replica["replicas"]):
                name = f"{self.name}-{kind.lower()}-{index}"
                self.pods[name] = Pod(name, kind, index, replica["restartPolicy"], str(next(uid)), self.ticks)

    def update_status(self, now: dt.datetime) -> None:
        if self.start_time is None:
            self.start_time = now
        replicas = self.job["spec"]["pytorchReplicaSpecs"]
        for kind, replica in replicas.items():
            pods = [p for p in self.pods.values() if p.replica_type == kind]
            running = sum(p.phase == "Running" for p in pods)
            succeeded = sum(p.phase == "Succeeded" for p in pods)
            failed = sum(p.phase == "Failed" for p in pods)
            done = (kind == "Master" and succeeded == replica["replicas"]) or (
                "Master" not in replicas and kind == "Worker"
                and (succeeded == replica["replicas"] or ("elasticPolicy" in self.job["spec"] and succeeded > 0)))
            if (kind == "Master" or "Master" not in replicas) and running > 0 and not done:
                self.set_condition("Running", "PyTorchJobRunning", f"PyTorchJob {self.name} is running.", now)
            if done:
                self.completion_time = self.completion_time or now
                self.set_condition("Succeeded", "PyTorchJobSucceeded",
                                   f"PyTorchJob {self.name} is successfully completed.", now)
                return
            if failed and replica["replicas"] > succeeded + running:
                if replica["restartPolicy"] != "Never":
                    self.set_condition("Restarting", "PyTorchJobRestarting",
                                       f"PyTorchJob {self.name} is restarting because {failed} {kind} replica(s) failed.", now)
                else:
                    self.completion_time = self.completion_time or now
                    self.set_condition("Failed", "PyTorchJobFailed",
                                       f"PyTorchJob {self.name} is failed because {failed} {kind} replica(s) failed.", now)

    # ------------------------------------------------------------------ the kubelets

    def kubelet(self, now: dt.datetime) -> None:
        stamp = rfc3339(now)
        for pod in self.pods.values():
            if pod.phase == "Pending" and self.ticks - pod.created_tick >= self.scenario.pending_ticks:
                self.start(pod, stamp)
            elif pod.restart_at is not None and self.ticks >= pod.restart_at:
                pod.previous_log, pod.log = pod.log, []
                pod.last_state = {"terminated": pod.state["terminated"]}
                pod.restart_count += 1
                pod.restart_at = None
                self.start(pod, stamp)
            elif "running" in pod.state:
                pod.log.append(f"{pod.name} step={self.ticks} loss=0.{max(1, 90 - self.ticks)}")
        for crash in self.scenario.crashes:
            if crash.at != self.ticks:
                continue
            root = self.pods.get(f"{self.name}-{crash.pod}")
            if root is not None and "running" in root.state:
                self.exit(root, crash.reason, crash.exit_code, crash.log, now)
                if crash.cascade:
                    for pod in self.pods.values():
                        if pod is not root and "running" in pod.state:
                            self.exit(pod, "Error", 1, "torch.distributed.DistBackendError: peer closed the connection",
                                      now + dt.timedelta(seconds=1))
        self.maybe_complete(stamp)

    def start(self, pod: Pod, stamp: str) -> None:
        pod.phase = "Running"
        pod.state = {"running": {"startedAt": stamp}}
        pod.started_tick = self.ticks
        pod.log.append(f"{pod.name} started (restart {pod.restart_count})")

    def exit(self, pod: Pod, reason: str, code: int, line: str, when: dt.datetime) -> None:
        pod.log.append(line)
        pod.state = {"terminated": {"reason": reason, "exitCode": code, "finishedAt": rfc3339(when),
                                    "startedAt": pod.state["running"]["startedAt"]}}
        if pod.restart_policy == "Never":
            pod.phase = "Failed"
        else:
            pod.restart_at = self.ticks + 1  # reported terminated first, restarted in place next

    def maybe_complete(self, stamp: str) -> None:
        run_ticks = self.scenario.run_ticks
        if run_ticks is None or any(c.at > self.ticks for c in self.scenario.crashes):
            return
        lead = next(iter(self.pods.values()), None)  # master-0, or worker-0 without a Master
        if lead is None or "running" not in lead.state or self.ticks - lead.started_tick < run_ticks:
            return
        for pod in self.pods.values():
            pod.phase = "Succeeded"
            pod.log.append(f"{pod.name} training done")
            pod.state = {"terminated": {"reason": "Completed", "exitCode": 0, "finishedAt": stamp}}

    # ------------------------------------------------------------------ API views

    def pod_conditions(self, pod: Pod) -> list[dict[str, Any]]:
        if pod.phase == "Pending" and self.scenario.unschedulable:
            return [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                     "message": self.scenario.unschedulable}]
        return [{"type": "PodScheduled", "status": "True"}]

    def pod_json(self, pod: Pod, namespace: str) -> dict[str, Any]:
        labels = {JOB_NAME_LABEL: self.name, REPLICA_TYPE_LABEL: pod.replica_type.lower(),
                  REPLICA_INDEX_LABEL: str(pod.index)}
        if pod.replica_type == "Master":
            labels[JOB_ROLE_LABEL] = "master"
        replica = self.job["spec"]["pytorchReplicaSpecs"][pod.replica_type]
        containers = copy.deepcopy(replica["template"]["spec"]["containers"])
        for container in containers:
            if container["name"] == CONTAINER:
                env = pod_env(self.job, pod.replica_type, pod.index)
                container["env"] = [*container.get("env", []), *({"name": k, "value": v} for k, v in env.items())]
        status = {"name": CONTAINER, "ready": "running" in pod.state, "restartCount": pod.restart_count,
                  "image": containers[0].get("image", ""), "imageID": "", "state": pod.state}
        if pod.last_state:
            status["lastState"] = pod.last_state
        return {
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": pod.name, "namespace": namespace, "labels": labels, "uid": pod.uid,
                         "ownerReferences": [{"apiVersion": "kubeflow.org/v1", "kind": "PyTorchJob",
                                              "name": self.name, "uid": self.body["metadata"].get("uid", ""),
                                              "controller": True, "blockOwnerDeletion": True}]},
            "spec": {"containers": containers, "restartPolicy": "Never" if pod.restart_policy == "ExitCode"
                     else pod.restart_policy},
            "status": {"phase": pod.phase, "containerStatuses": [status], "conditions": self.pod_conditions(pod)},
        }
