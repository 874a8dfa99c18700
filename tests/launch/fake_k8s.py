"""A loopback Kubernetes API server with the Training Operator's PyTorchJob behaviour behind it.

The API side answers what the launcher calls (create/get/delete pytorchjobs, list pods, pod
logs with `previous`/`tailLines`), records every request as (method, path) plus its query,
and refuses a create the way the operator's validating webhook does. Behind it,
tests/launch/training_operator.py plays the controller and the kubelets: one reconcile per
GET of the job (and per `tick()`), on a simulated clock that advances `tick_s` per reconcile,
so activeDeadlineSeconds and ttlSecondsAfterFinished run in simulated seconds. Kubernetes'
garbage collector is modelled for ownerReferences to pods: a job whose owner pod is deleted
(or never existed) is deleted with its pods.

Reusable: `with FakeKubernetes(scenario=...) as k8s:` then point a client at
`k8s.kubeconfig(path)`.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tests.launch.training_operator import (
    RUNS_FOREVER,
    SUCCEEDS,
    Crash,
    OperatorJob,
    Scenario,
    crash_loop,
    denial_message,
    webhook_errors,
)

JOBS = re.compile(r"^/apis/kubeflow\.org/v1/namespaces/(?P<ns>[^/]+)/pytorchjobs(?:/(?P<name>[^/]+))?$")
PODS = re.compile(r"^/api/v1/namespaces/(?P<ns>[^/]+)/pods(?:/(?P<name>[^/]+)(?P<log>/log)?)?$")
CLOCK_START = dt.datetime(2026, 12, 1, 8, 0, 0, tzinfo=dt.UTC)

__all__ = ["Crash", "FakeKubernetes", "RUNS_FOREVER", "SUCCEEDS", "Scenario", "crash_loop", "exercise_launcher"]


class FakeKubernetes:
    """The fake API server. `scenario`: how the containers of every created job behave."""

    def __init__(self, scenario: Scenario = SUCCEEDS, namespace: str = "kubeflow", create_status: int = 201,
                 latency_s: float = 0.0, create_latency_s: float = 0.0, tick_s: float = 1.0,
                 tick_on_get: bool = True) -> None:
        self.scenario = scenario
        self.namespace = namespace
        self.create_status = create_status
        self.latency_s = latency_s  # added to every answer: a slow or distant API server
        self.create_latency_s = create_latency_s  # added to creates, after the job exists
        self.tick_s = tick_s
        self.tick_on_get = tick_on_get
        self.clock = CLOCK_START
        self.jobs: dict[tuple[str, str], OperatorJob] = {}
        self.step_pods: dict[str, tuple[str, str]] = {}  # uid -> (namespace, name): pods that may own jobs
        self.calls: list[tuple[str, str]] = []
        self.queries: list[dict[str, list[str]]] = []
        self.created: list[dict[str, Any]] = []
        self.deleted: list[str] = []
        self.denied: list[str] = []
        self.lock = threading.RLock()
        self._uid = itertools.count(1)
        self._server: ThreadingHTTPServer | None = None

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
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
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

    # ------------------------------------------------------------------ the cluster, for tests

    def tick(self, times: int = 1) -> None:
        """Let the controller reconcile every job `times` times (time passes without the launcher)."""
        with self.lock:
            for _ in range(times):
                for key in list(self.jobs):
                    self._reconcile(key)

    def add_step_pod(self, name: str, uid: str, namespace: str | None = None) -> None:
        """A pod outside any job (the KFP step pod running the launcher), which may own jobs."""
        with self.lock:
            self.step_pods[uid] = (namespace or self.namespace, name)

    def delete_step_pod(self, uid: str) -> None:
        """Delete that pod (Argo/KFP removing the step pod); the garbage collector follows."""
        with self.lock:
            self.step_pods.pop(uid, None)
            self._collect_garbage()

    def job(self, name: str, namespace: str | None = None) -> OperatorJob | None:
        return self.jobs.get((namespace or self.namespace, name))

    def _reconcile(self, key: tuple[str, str]) -> None:
        self.clock += dt.timedelta(seconds=self.tick_s)
        job = self.jobs[key]
        job.reconcile(self.clock, self._uid)
        if job.deleted:
            del self.jobs[key]
        self._collect_garbage()

    def _collect_garbage(self) -> None:
        """Delete jobs whose every Pod owner is gone (Kubernetes treats a missing owner as deleted)."""
        for key, job in list(self.jobs.items()):
            owners = [o for o in job.body["metadata"].get("ownerReferences") or [] if o.get("kind") == "Pod"]
            if owners and not any(self.step_pods.get(o.get("uid")) == (key[0], o.get("name")) for o in owners):
                del self.jobs[key]
                self.deleted.append(key[1])

    # ------------------------------------------------------------------ HTTP

    def _send(self, handler: BaseHTTPRequestHandler, code: int, payload: Any, content_type: str = "application/json") -> None:
        data = payload.encode() if isinstance(payload, str) else json.dumps(payload).encode()
        handler.send_response(code)
        handler.send_header("Content-Type", content_type)
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)

    @staticmethod
    def _failure(code: int, reason: str, message: str) -> tuple[int, dict[str, Any]]:
        return code, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": reason,
                      "message": message, "code": code}

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
                reply = self._jobs(method, jobs["ns"], jobs["name"], body)
            elif pods and method == "GET":
                reply = self._pods_api(pods["ns"], pods["name"], bool(pods["log"]), query)
            else:
                reply = self._failure(404, "NotFound", f"fake: no route for {method} {parts.path}")
        if method == "POST" and self.create_latency_s:
            time.sleep(self.create_latency_s)  # the job exists; the answer is slow to come back
        self._send(handler, *reply)

    def _jobs(self, method: str, ns: str, name: str | None, body: Any) -> tuple:
        if method == "POST" and name is None:
            if self.create_status >= 400:
                return self._failure(self.create_status, "Forbidden", "fake: create refused")
            errors = webhook_errors(body)
            if errors:
                self.denied.append(denial_message(errors))
                return self._failure(403, "Forbidden", denial_message(errors))
            key = (ns, body["metadata"]["name"])
            if key in self.jobs:
                return self._failure(409, "AlreadyExists", f'pytorchjobs.kubeflow.org "{key[1]}" already exists')
            self.created.append(body)
            self.jobs[key] = OperatorJob(body, self.scenario, self.clock)
            return (201, self._job_json(self.jobs[key]))
        if (ns, name or "") not in self.jobs:
            return self._failure(404, "NotFound", f'pytorchjobs.kubeflow.org "{name}" not found')
        if method == "GET":
            if self.tick_on_get:
                self._reconcile((ns, name or ""))
            job = self.jobs.get((ns, name or ""))
            if job is None:  # its TTL ran out on this reconcile
                return self._failure(404, "NotFound", f'pytorchjobs.kubeflow.org "{name}" not found')
            return (200, self._job_json(job))
        if method == "DELETE":
            del self.jobs[(ns, name or "")]
            self.deleted.append(name or "")
            return (200, {"kind": "Status", "apiVersion": "v1", "status": "Success"})
        return self._failure(405, "MethodNotAllowed", f"fake: {method} not supported")

    @staticmethod
    def _job_json(job: OperatorJob) -> dict[str, Any]:
        return {**job.body, "status": job.status_json()}

    def _pods_api(self, ns: str, name: str | None, is_log: bool, query: dict[str, list[str]]) -> tuple:
        pods = {pod.name: (job, pod) for (job_ns, _), job in self.jobs.items() if job_ns == ns
                for pod in job.pods.values()}
        if name is None:
            wanted = dict(item.split("=", 1) for item in query.get("labelSelector", [""])[0].split(",") if item)
            items = [job.pod_json(pod, ns) for job, pod in pods.values()]
            items = [p for p in items if all(p["metadata"]["labels"].get(k) == v for k, v in wanted.items())]
            return (200, {"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": items})
        if name not in pods:
            return self._failure(404, "NotFound", f'pods "{name}" not found')
        job, pod = pods[name]
        if not is_log:
            return (200, job.pod_json(pod, ns))
        previous = query.get("previous", ["false"])[0] in ("true", "True", "1")
        lines = pod.previous_log if previous else pod.log
        if lines is None:
            return self._failure(400, "BadRequest", f'previous terminated container "pytorch" in pod "{name}" not found')
        if not previous and pod.phase == "Pending":
            return self._failure(400, "BadRequest", f'container "pytorch" in pod "{name}" is waiting to start: ContainerCreating')
        tail = int(query.get("tailLines", [len(lines)])[0])
        return (200, "\n".join(lines[-tail:]) + "\n" if lines else "", "text/plain")


# ---------------------------------------------------------------------- every launcher path


def exercise_launcher(tmp_dir: str | Path) -> tuple[list[tuple[str, str]], list[dict[str, list[str]]]]:
    """Run the launcher through every path it has against fresh fake servers: success, a crash
    loop ending at the backoff limit, our own timeout, a finished leftover job of the same run
    replaced, a webhook denial, and the exit handler's delete of a job that is there or gone.
    Returns every request made, with its query, for the RBAC check."""
    import contextlib

    from components.launch.cluster import delete_job, run_pytorchjob
    from components.launch.spec import LaunchSpec, TrainingFailed

    def spec(**extra: Any) -> LaunchSpec:
        return LaunchSpec(**{"job_name": "recap-train-rbac", "image": "i", "num_workers": 2, "timeout_s": 5.0,
                             "poll_interval_s": 0.01, "backoff_limit": 2, **extra})

    command = ["torchrun", "--nnodes=2", "-m", "components.train"]
    calls: list[tuple[str, str]] = []
    queries: list[dict[str, list[str]]] = []
    paths = ((SUCCEEDS, {}, 201), (crash_loop(), {}, 201), (RUNS_FOREVER, {"timeout_s": 0.3}, 201),
             (SUCCEEDS, {}, 403))  # the last: refused at create (RBAC, webhook)
    for scenario, extra, create_status in paths:
        with FakeKubernetes(scenario=scenario, create_status=create_status) as fake:
            kubeconfig = fake.kubeconfig(Path(tmp_dir) / "kubeconfig-rbac")
            with contextlib.suppress(TrainingFailed):
                run_pytorchjob(spec(cleanup="never", **extra), command, kubeconfig=kubeconfig)
            with contextlib.suppress(TrainingFailed):
                run_pytorchjob(spec(**extra), command, kubeconfig=kubeconfig)  # replaces a finished leftover
            delete_job("recap-train-rbac", "kubeflow", kubeconfig=kubeconfig)
            delete_job("recap-train-rbac", "kubeflow", kubeconfig=kubeconfig)  # already gone: 404 is fine
            calls += fake.calls
            queries += fake.queries
    return calls, queries
