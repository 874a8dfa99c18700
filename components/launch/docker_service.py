"""The tf.data service of a `docker` backend job: a dispatcher and N dataset workers as containers.

The same `recap data-service` processes the Kubernetes backend runs as Pods, here as containers
from the training image on the host's network, like the job's replicas. Every process shares
the host's loopback, so each listens on its own port, chosen free on 127.0.0.1 before anything
starts: the trainer gets `grpc://127.0.0.1:<dispatcher port>`, and each worker registers
`127.0.0.1:<its port>`, which the trainer containers reach directly. The dispatcher journals in
its container's own file system, which a restart of the same container (docker's `on-failure`,
like the kubelet's in-place restart) keeps. docker.py starts them before the replicas and
removes them when the job ends, whatever the cleanup policy: a kept job is for reading its
replicas' logs, and an idle service would hold CPUs and ports.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from components.launch.cluster_service import DISPATCHER_RESOURCES, WORKER_RESOURCES
from components.launch.local import free_port
from components.launch.spec import LaunchSpec

JOURNAL_DIR = "/tmp/recap-data-service-journal"
# The trainer's wait for the dispatcher: the service containers import TensorFlow while the
# replicas start, which on a loaded host can take minutes (the local backend allows as long).
DOCKER_CONNECT_TIMEOUT_S = 300.0


@dataclass(frozen=True)
class DockerDataService:
    dispatcher_port: int
    worker_ports: tuple[int, ...]

    @property
    def address(self) -> str:
        return f"grpc://127.0.0.1:{self.dispatcher_port}"

    @property
    def ports(self) -> frozenset[int]:
        return frozenset((self.dispatcher_port, *self.worker_ports))


def plan_data_service(workers: int) -> DockerDataService:
    """Distinct free loopback ports for the dispatcher and each worker."""
    ports: list[int] = []
    while len(ports) < workers + 1:
        port = free_port()
        if port not in ports:
            ports.append(port)
    return DockerDataService(ports[0], tuple(ports[1:]))


def service_containers(spec: LaunchSpec, service: DockerDataService) -> list[dict[str, Any]]:
    """The dispatcher's and the workers' containers, in the shape docker.py starts a replica from
    (`limits` as Kubernetes quantities, which it reads)."""
    env = {**dict(spec.env), "PYTHONUNBUFFERED": "1"}

    def container(name: str, replica: str, component: str, args: list[str], resources: dict[str, str]) -> dict:
        return {"name": name, "replica": replica, "image": spec.image,
                "entrypoint": ["recap", "data-service", component], "args": args, "env": dict(env),
                "limits": dict(resources), "hosts": {}}

    dispatcher = container(f"{spec.job_name}-dispatcher", "dispatcher", "dispatcher",
                           [f"--port={service.dispatcher_port}", f"--journal-dir={JOURNAL_DIR}"], DISPATCHER_RESOURCES)
    workers = [container(f"{spec.job_name}-data-worker-{index}", f"data-worker-{index}", "worker",
                         [f"--dispatcher={service.address}", f"--port={port}", "--worker-host=127.0.0.1"],
                         WORKER_RESOURCES)
               for index, port in enumerate(service.worker_ports)]
    return [dispatcher, *workers]
