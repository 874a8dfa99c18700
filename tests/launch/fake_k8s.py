"""A loopback HTTP server that answers the Kubernetes API calls the launcher makes.

It plays a small training operator: a created PyTorchJob walks through a scripted list of
conditions (one step per GET of the job), its master/worker pods follow the job's phase,
pod logs are served as text, and DELETE removes the job and its pods. Every request is
recorded as (method, path) so tests, and the manifests engineer's RBAC check, can compare
the calls made with what the Role grants (`rbac_rules`).

Reusable: `with FakeKubernetes(script=[...]) as k8s:` then point a client at
`k8s.kubeconfig(path)` or `k8s.configuration()`.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

JOBS = re.compile(r"^/apis/kubeflow\.org/v1/namespaces/(?P<ns>[^/]+)/pytorchjobs(?:/(?P<name>[^/]+))?$")
PODS = re.compile(r"^/api/v1/namespaces/(?P<ns>[^/]+)/pods(?:/(?P<name>[^/]+)(?P<log>/log)?)?$")

SUCCESS_SCRIPT = ("Created", "Running", "Succeeded")
FAILURE_SCRIPT = ("Created", "Running", "Failed")
STALL_SCRIPT = ("Created", "Running")  # stays Running forever: for timeouts and cancellation


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class FakeJob:
    body: dict[str, Any]
    script: tuple[str, ...]
    step: int = -1
    conditions: list[dict[str, Any]] = field(default_factory=list)

    @property
    def phase(self) -> str:
        return self.script[self.step] if self.step >= 0 else "Pending"


class FakeKubernetes:
    """The fake API server. `script`: the condition types a job walks through, one per GET."""

    def __init__(self, script: Sequence[str] = SUCCESS_SCRIPT, namespace: str = "kubeflow",
                 failure_reason: str = "OOMKilled", failure_exit_code: int = 137,
                 failure_log: str = "torch.OutOfMemoryError: CUDA out of memory", log_lines: int = 5,
                 create_status: int = 201, latency_s: float = 0.0) -> None:
        self.script = tuple(script)
        self.namespace = namespace
        self.failure_reason = failure_reason
        self.failure_exit_code = failure_exit_code
        self.failure_log = failure_log
        self.log_lines = log_lines
        self.create_status = create_status
        self.latency_s = latency_s  # added to every answer: a slow or distant API server
        self.jobs: dict[tuple[str, str], FakeJob] = {}
        self.calls: list[tuple[str, str]] = []
        self.queries: list[dict[str, list[str]]] = []
        self.created: list[dict[str, Any]] = []
        self.deleted: list[str] = []
        self.lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> FakeKubernetes:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # quiet test output
                return

            def do_GET(self) -> None:
                fake._handle(self, "GET")

            def do_POST(self) -> None:
                fake._handle(self, "POST")

            def do_DELETE(self) -> None:
                fake._handle(self, "DELETE")

            def do_PATCH(self) -> None:
                fake._handle(self, "PATCH")

            def do_PUT(self) -> None:
                fake._handle(self, "PUT")

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def __enter__(self) -> FakeKubernetes:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        assert self._server is not None, "start() the server first"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def kubeconfig(self, path: str | Path) -> str:
        """Write a kubeconfig whose only cluster is this server; returns its path."""
        config = {
            "apiVersion": "v1", "kind": "Config", "current-context": "fake",
            "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
            "users": [{"name": "fake", "user": {"token": "not-a-real-token"}}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake", "namespace": self.namespace}}],
        }
        Path(path).write_text(json.dumps(config))  # JSON is YAML
        return str(path)

    def configuration(self) -> Any:
        from kubernetes.client import Configuration

        config = Configuration(host=self.url)
        config.api_key = {"authorization": "not-a-real-token"}
        config.api_key_prefix = {"authorization": "Bearer"}
        return config

    # ------------------------------------------------------------------ state

    def _pods(self, job: FakeJob) -> list[dict[str, Any]]:
        name = job.body["metadata"]["name"]
        pods = []
        for replica_type, replica in job.body["spec"]["pytorchReplicaSpecs"].items():
            for index in range(int(replica.get("replicas", 1))):
                labels = {
                    "training.kubeflow.org/job-name": name,
                    "training.kubeflow.org/replica-type": replica_type.lower(),
                    "training.kubeflow.org/replica-index": str(index),
                }
                if replica_type == "Master":
                    labels["training.kubeflow.org/job-role"] = "master"
                pods.append(self._pod(job, f"{name}-{replica_type.lower()}-{index}", labels, replica_type == "Master"))
        return pods

    def _pod(self, job: FakeJob, name: str, labels: dict[str, str], is_master: bool) -> dict[str, Any]:
        phase = {"Created": "Pending", "Running": "Running", "Restarting": "Running",
                 "Succeeded": "Succeeded", "Failed": "Failed"}.get(job.phase, "Pending")
        state: dict[str, Any] = {"running": {"startedAt": _now()}}
        if phase == "Pending":
            state = {"waiting": {"reason": "ContainerCreating"}}
        elif phase == "Succeeded":
            state = {"terminated": {"reason": "Completed", "exitCode": 0}}
        elif phase == "Failed":
            failed = is_master
            state = {"terminated": {"reason": self.failure_reason if failed else "Error",
                                    "exitCode": self.failure_exit_code if failed else 1}}
        return {
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": job.body["metadata"].get("namespace", self.namespace),
                         "labels": labels, "creationTimestamp": _now()},
            "status": {"phase": phase, "containerStatuses": [
                {"name": "pytorch", "ready": phase == "Running", "restartCount": 0, "image": "x", "imageID": "",
                 "state": state}]},
        }

    def _advance(self, job: FakeJob) -> None:
        if job.step + 1 >= len(job.script):
            return
        job.step += 1
        kind = job.script[job.step]
        for condition in job.conditions:
            if kind in ("Succeeded", "Failed") and condition["type"] == "Running":
                condition["status"] = "False"
        message = f"PyTorchJob {job.body['metadata']['name']} is {kind.lower()}."
        if kind == "Failed":
            message = f"PyTorchJob {job.body['metadata']['name']} is failed because 1 Master replica(s) failed."
        job.conditions.append({"type": kind, "status": "True", "reason": f"PyTorchJob{kind}",
                               "message": message, "lastTransitionTime": _now(), "lastUpdateTime": _now()})

    def _job_json(self, job: FakeJob) -> dict[str, Any]:
        return {**job.body, "status": {"conditions": [dict(c) for c in job.conditions]}}

    # ------------------------------------------------------------------ HTTP

    def _send(self, handler: BaseHTTPRequestHandler, code: int, payload: Any, content_type: str = "application/json") -> None:
        data = payload.encode() if isinstance(payload, str) else json.dumps(payload).encode()
        handler.send_response(code)
        handler.send_header("Content-Type", content_type)
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)

    def _status(self, handler: BaseHTTPRequestHandler, code: int, reason: str, message: str) -> None:
        self._send(handler, code, {"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                   "reason": reason, "message": message, "code": code})

    def _handle(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        if self.latency_s:
            time.sleep(self.latency_s)
        parts = urlsplit(handler.path)
        query = parse_qs(parts.query)
        length = int(handler.headers.get("Content-Length") or 0)
        body = json.loads(handler.rfile.read(length) or b"null") if length else None
        with self.lock:
            self.calls.append((method, parts.path))
            self.queries.append(query)
            jobs, pods = JOBS.match(parts.path), PODS.match(parts.path)
            if jobs:
                self._jobs(handler, method, jobs["ns"], jobs["name"], body)
            elif pods and method == "GET":
                self._pods_api(handler, pods["ns"], pods["name"], bool(pods["log"]), query)
            else:
                self._status(handler, 404, "NotFound", f"fake: no route for {method} {parts.path}")

    def _jobs(self, handler: BaseHTTPRequestHandler, method: str, ns: str, name: str | None, body: Any) -> None:
        if method == "POST" and name is None:
            if self.create_status >= 400:
                self._status(handler, self.create_status, "Forbidden", "fake: create refused")
                return
            key = (ns, body["metadata"]["name"])
            if key in self.jobs:
                self._status(handler, 409, "AlreadyExists", f'pytorchjobs.kubeflow.org "{key[1]}" already exists')
                return
            self.created.append(body)
            self.jobs[key] = FakeJob(body=body, script=self.script)
            self._send(handler, 201, self._job_json(self.jobs[key]))
            return
        job = self.jobs.get((ns, name or ""))
        if job is None:
            self._status(handler, 404, "NotFound", f'pytorchjobs.kubeflow.org "{name}" not found')
            return
        if method == "GET":
            self._advance(job)
            self._send(handler, 200, self._job_json(job))
        elif method == "DELETE":
            del self.jobs[(ns, name or "")]
            self.deleted.append(name or "")
            self._send(handler, 200, {"kind": "Status", "apiVersion": "v1", "status": "Success"})
        else:
            self._status(handler, 405, "MethodNotAllowed", f"fake: {method} not supported")

    def _pods_api(self, handler: BaseHTTPRequestHandler, ns: str, name: str | None, is_log: bool,
                  query: dict[str, list[str]]) -> None:
        all_pods = [pod for (job_ns, _), job in self.jobs.items() if job_ns == ns for pod in self._pods(job)]
        if name is None:
            wanted = dict(item.split("=", 1) for item in query.get("labelSelector", [""])[0].split(",") if item)
            items = [p for p in all_pods if all(p["metadata"]["labels"].get(k) == v for k, v in wanted.items())]
            self._send(handler, 200, {"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": items})
            return
        pod = next((p for p in all_pods if p["metadata"]["name"] == name), None)
        if pod is None or not is_log:
            self._status(handler, 404, "NotFound", f'pods "{name}" not found')
            return
        lines = [f"{name} step={i} loss=0.{9 - i}" for i in range(self.log_lines)]
        if pod["status"]["phase"] == "Failed" and "master" in name:
            lines.append(self.failure_log)
        tail = int(query.get("tailLines", [len(lines)])[0])
        self._send(handler, 200, "\n".join(lines[-tail:]) + "\n", content_type="text/plain")


# ---------------------------------------------------------------------- RBAC


def rbac_rules(calls: Iterable[tuple[str, str]], queries: Iterable[dict[str, list[str]]] | None = None) -> set[tuple[str, str, str]]:
    """(apiGroup, resource, verb) triples a Role must grant for the recorded calls."""
    rules = set()
    queries = list(queries) if queries is not None else None
    for index, (method, path) in enumerate(calls):
        watch = bool(queries and queries[index].get("watch", [""])[0] in ("true", "1"))
        if match := JOBS.match(path):
            group, resource, named = "kubeflow.org", "pytorchjobs", match["name"] is not None
        elif match := PODS.match(path):
            group, resource, named = "", "pods/log" if match["log"] else "pods", match["name"] is not None
        else:
            raise ValueError(f"unknown API path {path}")
        verb = {"POST": "create", "DELETE": "delete", "PATCH": "patch", "PUT": "update"}.get(method)
        if verb is None:
            verb = "watch" if watch else ("get" if named else "list")
        rules.add((group, resource, verb))
    return rules


def exercise_launcher(tmp_dir: str | Path) -> set[tuple[str, str, str]]:
    """Run the launcher through every path (success, failure, timeout, a leftover job, the exit
    handler's delete) against fresh fake servers; return the RBAC rules those calls need.

    For manifests/ tests: the launcher's Role must grant exactly this set.
    """
    import contextlib

    from components.launch.cluster import delete_job, run_pytorchjob
    from components.launch.spec import LaunchSpec, TrainingFailed

    def spec(**extra: Any) -> LaunchSpec:
        return LaunchSpec(**{"job_name": "recap-train-rbac", "image": "i", "num_workers": 2, "timeout_s": 0.5,
                             "poll_interval_s": 0.02, **extra})

    command = ["torchrun", "--nnodes=2", "-m", "components.train"]
    calls: list[tuple[str, str]] = []
    queries: list[dict[str, list[str]]] = []
    for script in (SUCCESS_SCRIPT, FAILURE_SCRIPT, STALL_SCRIPT):
        with FakeKubernetes(script=script) as fake:
            kubeconfig = fake.kubeconfig(Path(tmp_dir) / "kubeconfig-rbac")
            with contextlib.suppress(TrainingFailed):
                run_pytorchjob(spec(cleanup="never"), command, kubeconfig=kubeconfig)
                run_pytorchjob(spec(), command, kubeconfig=kubeconfig)  # replaces the finished leftover
            delete_job("recap-train-rbac", "kubeflow", kubeconfig=kubeconfig)
            calls += fake.calls
            queries += fake.queries
    return rbac_rules(calls, queries)
