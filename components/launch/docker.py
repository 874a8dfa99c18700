"""Run the PyTorchJob's pods as containers on one Docker engine (the `docker` backend).

Takes the same PyTorchJob object the `kubernetes` backend submits and does what the Training
Operator (v1.9) and the kubelet would do with it, on one host:
- one container per replica (`<job>-master-0`, `<job>-worker-<i>`) from the pod template:
  its image (never pulled: it must be on the engine), command, args, env, cpu and memory
  limits, and /dev/shm in memory;
- the env the operator adds to every replica (pytorch/envvar.go, master.go): PYTHONUNBUFFERED,
  MASTER_PORT, PET_MASTER_PORT, MASTER_ADDR, PET_MASTER_ADDR, WORLD_SIZE (replicas x
  nprocPerNode), RANK and PET_NODE_RANK (master 0, worker i + 1), PET_NPROC_PER_NODE and
  PET_NNODES; then `$(VAR)` in command and args is expanded from the env, as the kubelet does;
- every replica shares the host's network (there is no bridge here) but gets an address of its
  own in 127.0.10.0/24, on loopback like all of 127/8, as every pod has its own IP: its hostname
  is its pod name and every pod name resolves to its replica's address, MASTER_ADDR (the
  master's Service name) included. Distinct addresses matter: torchrun's c10d rendezvous tells
  nodes apart by host name and pid (every agent is pid 1 in its container), and picks the store's
  host by comparing addresses. The master port is a free one, declared in the template as
  `pytorchjob-port` (the operator uses a declared port instead of its default 23456);
- restartPolicy OnFailure: a failed container is restarted in place (docker's `on-failure`,
  like the kubelet); the job fails once the replicas' restarts reach runPolicy.backoffLimit
  (core.PastBackoffLimit: the sum over replicas), succeeds when the master exits 0, and its containers are removed
  per the cleanup policy.
With `data_service_workers`, the job's tf.data service (a dispatcher and N dataset workers,
components/launch/docker_service.py) starts first and is removed when the job ends, always.
Pods see object storage, not this machine's disk: data, checkpoints and models are URIs
(gs://, with STORAGE_EMULATOR_HOST passed through for an emulator on loopback).
"""

from __future__ import annotations

import collections
import logging
import re
import signal
import sys
import threading
import time
from typing import Any

from components.common.errors import ConfigError
from components.launch.docker_service import DockerDataService, service_containers
from components.launch.local import free_port
from components.launch.pytorchjob import (
    CONTAINER_NAME,
    RUN_ID_LABEL,
    build_pytorchjob,
    operator_backoff_limit,
    to_manifest,
)
from components.launch.spec import (
    LaunchCancelled,
    LaunchResult,
    LaunchSpec,
    LaunchTimeout,
    TrainingFailed,
)

log = logging.getLogger(__name__)

PORT_NAME = "pytorchjob-port"  # the operator reads the master port from this container port
REPLICA_LABEL = "recap.ai/replica"
POLL_S = 0.5
POD_NETWORK = "127.0.10"  # replica i (master first) is 127.0.10.<i + 1>, a loopback address
_VAR_REF = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")
_QUANTITY = re.compile(r"^([0-9.]+)([a-zA-Z]*)$")
_UNITS = {"": 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12,
          "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}


def expand(text: str, env: dict[str, str]) -> str:
    """Kubernetes' `$(VAR)` expansion in command and args: `$$` is a literal `$`, unknown names stay."""
    return _VAR_REF.sub(lambda m: "$" if m.group(0) == "$$" else env.get(m.group(1), m.group(0)), text)


def quantity(text: str) -> float:
    """A Kubernetes quantity (`500m` cpu, `8Gi` memory) as a number (cores, bytes)."""
    if text.endswith("m") and text[:-1].isdigit():
        return int(text[:-1]) / 1000
    match = _QUANTITY.match(text)
    if not match or match.group(2) not in _UNITS:
        raise ConfigError(f"launch: cannot read the quantity {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def replica_name(job: str, replica_type: str, index: int) -> str:
    return f"{job}-{replica_type.lower()}-{index}"


def operator_env(manifest: dict[str, Any], replica_type: str, index: int) -> list[tuple[str, str]]:
    """What the operator appends to the `pytorch` container's env for one replica (setPodEnv)."""
    spec = manifest["spec"]
    replicas = spec["pytorchReplicaSpecs"]
    total = sum(int(r.get("replicas", 1)) for r in replicas.values())
    nproc = spec.get("nprocPerNode")
    world_size = total * (int(nproc) if nproc and str(nproc).isdigit() else 1)
    master = replicas["Master"]["template"]["spec"]["containers"][0]
    port = next(p["containerPort"] for p in master.get("ports", []) if p.get("name") == PORT_NAME)
    master_addr = replica_name(manifest["metadata"]["name"], "Master", 0)
    rank = index + 1 if replica_type == "Worker" else index
    env = [("PYTHONUNBUFFERED", "1"),
           ("MASTER_PORT", str(port)), ("PET_MASTER_PORT", str(port)),
           ("MASTER_ADDR", master_addr), ("PET_MASTER_ADDR", master_addr),
           ("WORLD_SIZE", str(world_size)), ("RANK", str(rank)), ("PET_NODE_RANK", str(rank))]
    if nproc is not None:
        env.append(("PET_NPROC_PER_NODE", str(nproc)))
    env.append(("PET_NNODES", str(total)))
    return env


def pods(spec: LaunchSpec, command: list[str], port: int) -> list[dict[str, Any]]:
    """The containers the job's pods would run: name, image, entrypoint, args, env, limits."""
    if spec.elastic is not None:
        raise ConfigError("launch: the docker backend runs fixed-size jobs; elastic jobs need the kubernetes backend")
    if spec.gcs_secret:
        raise ConfigError("launch: --gcs-secret names a Kubernetes Secret; the docker backend has none "
                          "(pass credentials with --env, or use an emulator)")
    manifest = to_manifest(build_pytorchjob(spec, command))
    for replica in manifest["spec"]["pytorchReplicaSpecs"].values():  # as if the user had declared it
        replica["template"]["spec"]["containers"][0]["ports"] = [{"name": PORT_NAME, "containerPort": port}]
    out: list[dict[str, Any]] = []
    for replica_type, replica in manifest["spec"]["pytorchReplicaSpecs"].items():
        container = next(c for c in replica["template"]["spec"]["containers"] if c["name"] == CONTAINER_NAME)
        for index in range(int(replica.get("replicas", 1))):
            pairs = [(e["name"], e.get("value", "")) for e in container.get("env", [])]
            env = dict(pairs + operator_env(manifest, replica_type, index))  # a later duplicate wins
            limits = container.get("resources", {}).get("limits", {})
            out.append({
                "name": replica_name(spec.job_name, replica_type, index),
                "replica": f"{replica_type.lower()}-{index}",
                "image": container["image"],
                "entrypoint": [expand(c, env) for c in container.get("command", [])],
                "args": [expand(a, env) for a in container.get("args", [])],
                "env": env,
                "cpus": quantity(limits["cpu"]) if "cpu" in limits else None,
                "memory": int(quantity(limits["memory"])) if "memory" in limits else None,
                "address": f"{POD_NETWORK}.{len(out) + 1}",
            })
    hosts = {pod["name"]: pod["address"] for pod in out}
    for pod in out:
        pod["hosts"] = hosts
    return out


def docker_client(who: str = "launch: the docker backend") -> Any:
    """docker-py against $DOCKER_HOST (or /var/run/docker.sock); no package or no engine is one ConfigError."""
    try:
        import docker
    except ImportError as exc:
        raise ConfigError(f"{who} needs docker-py (pip install 'recap-pipeline[launch]')") from exc
    try:
        client = docker.from_env()
        client.ping()
    except docker.errors.DockerException as exc:
        raise ConfigError(f"{who}: no Docker engine answers (DOCKER_HOST or /var/run/docker.sock): {exc}") from exc
    return client


def _start(client: Any, spec: LaunchSpec, pod: dict[str, Any]) -> Any:
    import docker

    try:
        client.images.get(pod["image"])
    except docker.errors.ImageNotFound:
        raise ConfigError(f"launch: image {pod['image']} is not on the Docker engine (nothing is pulled; "
                          "build it, e.g. make images-local)") from None
    cpus = pod["cpus"]
    if cpus and cpus > (available := client.info()["NCPU"]):
        # A node this small would leave the pod Pending; one host runs it with what it has.
        log.warning("%s: cpu limit %g capped at this engine's %d CPUs", pod["name"], cpus, available)
        cpus = available
    stale = client.containers.list(all=True, filters={"name": f"^{pod['name']}$"})
    for container in stale:  # a retried launch of the same run
        container.remove(force=True)
    return client.containers.run(
        pod["image"], command=pod["args"], entrypoint=pod["entrypoint"], environment=pod["env"],
        name=pod["name"], hostname=pod["name"], extra_hosts=pod["hosts"],
        network_mode="host", restart_policy={"Name": "on-failure"}, detach=True,
        nano_cpus=int(cpus * 1e9) if cpus else None, mem_limit=pod["memory"],
        shm_size=pod["memory"] or "1g",
        labels={RUN_ID_LABEL: spec.job_name, REPLICA_LABEL: pod["replica"]},
    )


class _Logs(threading.Thread):
    """Streams one container's output with a `[replica]` prefix, following it across restarts."""

    def __init__(self, container: Any, prefix: str, tail: collections.deque[str], done: threading.Event) -> None:
        super().__init__(daemon=True)
        self.container, self.prefix, self.tail, self.done = container, prefix, tail, done

    def run(self) -> None:
        since = None
        while not self.done.is_set():
            try:
                stream = self.container.logs(stream=True, follow=True, since=since)
                since = int(time.time())
                for line in _lines(stream):
                    self.tail.append(f"{self.prefix}{line}")
                    sys.stdout.write(f"{self.prefix}{line}\n")
                    sys.stdout.flush()
            except Exception:  # the container was removed: the job is over
                return
            self.done.wait(POLL_S)


def _lines(stream: Any):
    pending = b""
    for chunk in stream:
        pending += chunk
        *complete, pending = pending.split(b"\n")
        yield from (line.decode(errors="replace") for line in complete)
    if pending:
        yield pending.decode(errors="replace")


def _state(container: Any) -> tuple[str, int, int]:
    container.reload()
    state = container.attrs["State"]
    return state["Status"], int(state.get("ExitCode", 0)), int(container.attrs.get("RestartCount", 0))


def _past_backoff_limit(restarts: int, limit: int) -> bool:
    return restarts > 0 if limit == 0 else restarts >= limit


def _remove(container: Any) -> None:
    try:
        container.remove(force=True)
    except Exception as exc:  # cleanup must not mask the job's own outcome
        log.error("could not remove container %s: %s", container.name, exc)


def run_pytorchjob_in_docker(spec: LaunchSpec, command: list[str], data_service: DockerDataService | None = None,
                             client: Any = None) -> LaunchResult:
    """Run the job's replicas as containers until the master succeeds, the job fails or times out.

    `data_service`: start its dispatcher and workers first (their ports are already in `command`).
    """
    client = client or docker_client()
    containers: list[Any] = []
    service: list[Any] = []
    tail: collections.deque[str] = collections.deque(maxlen=max(spec.log_tail_lines, 1))
    done = threading.Event()
    cancelled: list[int] = []
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, lambda signum, _f: cancelled.append(signum))
    start = time.monotonic()
    succeeded = False
    limit = operator_backoff_limit(spec)  # what the job's runPolicy.backoffLimit says
    try:
        if data_service is not None:
            for pod in service_containers(spec, data_service):
                limits = pod.pop("limits")
                pod.update(cpus=quantity(limits["cpu"]), memory=int(quantity(limits["memory"])))
                service.append(_start(client, spec, pod))
                log.info("started %s (%s): %s", pod["name"], pod["image"], " ".join(pod["entrypoint"] + pod["args"]))
                _Logs(service[-1], f"[{pod['replica']}] ", tail, done).start()
        master_port = free_port()
        while data_service is not None and master_port in data_service.ports:
            master_port = free_port()
        for pod in pods(spec, command, master_port):
            containers.append(_start(client, spec, pod))
            log.info("started %s (%s): %s %s", pod["name"], pod["image"], " ".join(pod["entrypoint"]),
                     " ".join(pod["args"]))
            _Logs(containers[-1], f"[{pod['replica']}] ", tail, done).start()
        while True:
            if cancelled:
                raise LaunchCancelled(f"docker job {spec.job_name}: received SIGTERM; containers stopped")
            if time.monotonic() - start > spec.timeout_s:
                raise LaunchTimeout(f"docker job {spec.job_name}: not finished after {spec.timeout_s:g}s")
            states = [_state(c) for c in containers]
            status, code, _ = states[0]  # the master
            if status == "exited" and code == 0:
                succeeded = True
                break
            restarts = sum(r for _, _, r in states)
            if _past_backoff_limit(restarts, limit):
                lines = "\n".join(f"  | {line}" for line in tail)
                raise TrainingFailed(f"docker job {spec.job_name} Failed: {restarts} restart(s) reached "
                                     f"runPolicy.backoffLimit {limit}; exit codes "
                                     f"{[c for _, c, _ in states]}\n{lines}")
            time.sleep(POLL_S)
    finally:
        done.set()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        for container in service:  # whatever the cleanup policy: nothing reads an idle service
            _remove(container)
        if spec.cleanup == "always" or (spec.cleanup == "on_success" and succeeded):
            for container in containers:
                _remove(container)
    seconds = time.monotonic() - start
    log.info("docker job %s Succeeded in %.1fs", spec.job_name, seconds)
    return LaunchResult(backend="docker", job_name=spec.job_name, status="Succeeded", seconds=seconds,
                        deleted=spec.cleanup != "never")
