"""A loopback Kubernetes API server with the Training Operator's PyTorchJob behaviour behind it.

The API side answers what the launcher calls (create/get/delete pytorchjobs, list pods, pod
logs with `previous`/`tailLines`), records every request as (method, path) plus its query,
and refuses a create the way the operator's validating webhook does. Behind it,
tests/launch/training_operator.py plays the controller and the kubelets: one reconcile per
GET of the job (and per `tick()`), on a simulated clock that advances `tick_s` per reconcile,
so activeDeadlineSeconds and ttlSecondsAfterFinished run in simulated seconds. Kubernetes'
garbage collector is modelled as the real one treats ownerReferences: an owner is matched by
kind, name *and uid* in the dependent's namespace; an object whose every owner is absent (deleted,
never existed, or a same-named object with another uid) is deleted, transitively; deleting a job
with propagationPolicy Orphan strips the references instead. The API server assigns each created
object its uid, and refuses an ownerReference without apiVersion/kind/name/uid or with more than
one `controller: true` (422), as its validation does. Pods and Services created through the API
(a job's data service) are kept as objects; nothing runs in them.

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
SERVICES = re.compile(r"^/api/v1/namespaces/(?P<ns>[^/]+)/services(?:/(?P<name>[^/]+))?$")
CLOCK_START = dt.datetime(2026, 12, 1, 8, 0, 0, tzinfo=dt.UTC)

__all__ = ["Crash", "FakeKubernetes", "RUNS_FOREVER", "SUCCEEDS", "Scenario", "crash_loop", "exercise_launcher"]


class FakeKubernetes:
    """The fake API server. `scenario`: how the containers of every created job behave."""

    def __init__(self, scenario: Scenario = SUCCEEDS, namespace: str = "kubeflow", create_status: int = 201,
                 latency_s: float = 0.0, create_latency_s: float = 0.0, tick_s: float = 1.0,
                 tick_on_get: bool = True, refuse: tuple[str, ...] = ()) -> None:
        self.scenario = scenario
        self.namespace = namespace
        self.create_status = create_status
        self.latency_s = latency_s  # added to every answer: a slow or distant API server
        self.create_latency_s = create_latency_s  # added to creates, after the job exists
        self.tick_s = tick_s
        self.tick_on_get = tick_on_get
        self.refuse = refuse  # resources ("pods", "services") whose creates are forbidden (RBAC)
        self.clock = CLOCK_START
        self.jobs: dict[tuple[str, str], OperatorJob] = {}
        self.step_pods: dict[str, tuple[str, str]] = {}  # uid -> (namespace, name): pods that may own jobs
        self.calls: list[tuple[str, str]] = []
        self.queries: list[dict[str, list[str]]] = []
        self.created: list[dict[str, Any]] = []
        self.deleted: list[str] = []
        self.denied: list[str] = []
        # Pods and Services created through the API: (resource, namespace, name) -> object.
        self.objects: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.collected: list[tuple[str, str]] = []  # (resource, name) the garbage collector deleted
        self.created_objects: list[dict[str, Any]] = []  # every Pod/Service body as created
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

    def owned_by(self, job_name: str, namespace: str | None = None) -> list[dict[str, Any]]:
        """The API-created objects (pods, services) whose ownerReferences name this job."""
        return [o for (_, ns, _), o in self.objects.items() if ns == (namespace or self.namespace)
                and any(r.get("name") == job_name and r.get("kind") == "PyTorchJob"
                        for r in o["metadata"].get("ownerReferences") or [])]

    def _owner_present(self, namespace: str, ref: dict[str, Any]) -> bool:
        """The garbage collector's check: an owner of this kind, name and uid in the same namespace."""
        kind, name, uid = ref.get("kind"), ref.get("name"), ref.get("uid")
        if kind == "PyTorchJob":
            job = self.jobs.get((namespace, name or ""))
            return job is not None and job.body["metadata"].get("uid") == uid
        if kind == "Pod":
            if self.step_pods.get(uid or "") == (namespace, name):
                return True
            pod = self.objects.get(("pods", namespace, name or ""))
            return pod is not None and pod["metadata"].get("uid") == uid
        return False  # an owner kind this fake does not hold counts as absent

    def _collect_garbage(self) -> None:
        """Delete every object whose every owner is absent, until nothing changes (owners of owners)."""
        changed = True
        while changed:
            changed = False
            for key, job in list(self.jobs.items()):
                owners = job.body["metadata"].get("ownerReferences") or []
                if owners and not any(self._owner_present(key[0], o) for o in owners):
                    del self.jobs[key]
                    self.deleted.append(key[1])
                    changed = True
            for key, obj in list(self.objects.items()):
                owners = obj["metadata"].get("ownerReferences") or []
                if owners and not any(self._owner_present(key[1], o) for o in owners):
                    del self.objects[key]
                    self.collected.append((key[0], key[2]))
                    changed = True

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
            jobs, pods, services = JOBS.match(parts.path), PODS.match(parts.path), SERVICES.match(parts.path)
            if jobs:
                reply = self._jobs(method, jobs["ns"], jobs["name"], body, query)
            elif pods and method == "GET":
                reply = self._pods_api(pods["ns"], pods["name"], bool(pods["log"]), query)
            elif (pods and not pods["log"] and method in ("POST", "DELETE")) or (services and method in ("POST", "DELETE")):
                match = pods or services
                reply = self._objects("pods" if pods else "services", method, match["ns"], match["name"], body)
            else:
                reply = self._failure(404, "NotFound", f"fake: no route for {method} {parts.path}")
        if method == "POST" and self.create_latency_s:
            time.sleep(self.create_latency_s)  # the job exists; the answer is slow to come back
        self._send(handler, *reply)

    def _new_metadata(self, body: dict[str, Any]) -> None:
        """What the API server fills in on create: a uid and the creation time."""
        body["metadata"]["uid"] = f"uid-{next(self._uid):06d}"
        body["metadata"]["creationTimestamp"] = self.clock.strftime("%Y-%m-%dT%H:%M:%SZ")

    def _owner_reference_errors(self, body: dict[str, Any]) -> list[str]:
        """The API server's validation of metadata.ownerReferences (422 Invalid when any)."""
        errors = []
        refs = body["metadata"].get("ownerReferences") or []
        for index, ref in enumerate(refs):
            for key in ("apiVersion", "kind", "name", "uid"):
                if not ref.get(key):
                    errors.append(f"metadata.ownerReferences[{index}].{key}: Invalid value: \"\": {key} must not be empty")
        if sum(bool(ref.get("controller")) for ref in refs) > 1:
            errors.append("metadata.ownerReferences: Invalid value: []: Only one reference can have Controller set to true")
        return errors

    def _objects(self, resource: str, method: str, ns: str, name: str | None, body: Any) -> tuple:
        """Create or delete a Pod or Service (a job's data service)."""
        kind = {"pods": "Pod", "services": "Service"}[resource]
        if method == "POST" and name is None:
            name = body["metadata"]["name"]
            if resource in self.refuse:
                return self._failure(403, "Forbidden", f'{resource} is forbidden: User "fake" cannot create '
                                     f'resource "{resource}" in API group "" in the namespace "{ns}"')
            errors = self._owner_reference_errors(body)
            if errors:
                return self._failure(422, "Invalid", f'{kind} "{name}" is invalid: {"; ".join(errors)}')
            if (resource, ns, name) in self.objects:
                return self._failure(409, "AlreadyExists", f'{resource} "{name}" already exists')
            self._new_metadata(body)
            self.objects[(resource, ns, name)] = body
            self.created_objects.append(json.loads(json.dumps(body)))
            self._collect_garbage()  # an owner that does not exist (or another uid): deleted at once
            return (201, body)
        if method == "DELETE" and name is not None:
            if self.objects.pop((resource, ns, name), None) is None:
                return self._failure(404, "NotFound", f'{resource} "{name}" not found')
            self._collect_garbage()
            return (200, {"kind": "Status", "apiVersion": "v1", "status": "Success"})
        return self._failure(405, "MethodNotAllowed", f"fake: {method} {resource} not supported")

    def _jobs(self, method: str, ns: str, name: str | None, body: Any, query: dict[str, list[str]]) -> tuple:
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
            errors = self._owner_reference_errors(body)
            if errors:
                return self._failure(422, "Invalid", f'PyTorchJob "{key[1]}" is invalid: {"; ".join(errors)}')
            self._new_metadata(body)
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
            policy = ((body or {}).get("propagationPolicy") or query.get("propagationPolicy", ["Background"])[0])
            job = self.jobs.pop((ns, name or ""))
            self.deleted.append(name or "")
            if policy == "Orphan":  # the dependents stay, without the reference
                uid = job.body["metadata"]["uid"]
                for obj in self.objects.values():
                    refs = obj["metadata"].get("ownerReferences") or []
                    obj["metadata"]["ownerReferences"] = [r for r in refs if r.get("uid") != uid] or None
            self._collect_garbage()  # Background and Foreground both end with the dependents deleted
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
            items += [{**o, "status": {"phase": "Running"}} for (kind, o_ns, _), o in self.objects.items()
                      if kind == "pods" and o_ns == ns]
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
    replaced, a webhook denial, a job with a data service (kept: its service deleted by the
    launcher; deleted: by garbage collection), and the exit handler's delete of a job that is
    there or gone.
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
             (SUCCEEDS, {}, 403),  # refused at create (RBAC, webhook)
             (SUCCEEDS, {"data_service_workers": 1}, 201))  # the job's own tf.data service, kept job first
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
