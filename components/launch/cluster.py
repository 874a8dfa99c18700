"""Run training as a Kubeflow PyTorchJob: create, wait, explain a failure, delete.

Where the published Kubeflow launcher goes wrong, this one does not:
- the wait is bounded by our own deadline (the SDK's `wait_timeout`; its `timeout` argument
  is only the per-request API timeout), and transient API errors during a long wait are
  retried instead of failing a day of training;
- a job that ends Failed fails the step with the operator's reason, each pod's container
  state (OOMKilled, exit codes, ImagePullBackOff) and the tail of its logs;
- the job is deleted on success, failure, timeout and cancellation (SIGTERM from a cancelled
  run) per the cleanup policy; the pipeline's exit handler calls `delete_job` as a backstop.

API calls made (the RBAC Role in manifests/ grants exactly these): create/get/delete
`pytorchjobs` in `kubeflow.org`, list `pods`, get `pods/log`.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
import time
from collections.abc import Iterator
from typing import Any

from components.common.errors import StorageError
from components.launch.pytorchjob import CONTAINER_NAME, build_pytorchjob
from components.launch.spec import (
    LaunchCancelled,
    LaunchResult,
    LaunchSpec,
    LaunchTimeout,
    TrainingFailed,
)

log = logging.getLogger(__name__)

SUCCEEDED, FAILED = "Succeeded", "Failed"
REQUEST_TIMEOUT_S = 60
MAX_CONSECUTIVE_API_ERRORS = 8


def make_client(namespace: str, kubeconfig: str | None = None) -> Any:
    """TrainingClient from a kubeconfig file ($KUBECONFIG), or the in-cluster service account."""
    import os

    from kubeflow.training import TrainingClient

    # Read $KUBECONFIG now: the kubernetes package reads it once, at its import.
    kubeconfig = kubeconfig or os.environ.get("KUBECONFIG") or None
    try:
        return TrainingClient(config_file=kubeconfig, namespace=namespace, job_kind="PyTorchJob")
    except Exception as exc:  # kubernetes.config raises its own ConfigException
        raise StorageError(f"kubernetes: cannot load client configuration ({kubeconfig or 'in-cluster/~/.kube/config'}): {exc}") from exc


def _status(exc: BaseException) -> int | None:
    """HTTP status of an ApiException the SDK wrapped in RuntimeError, if any."""
    cause = exc if hasattr(exc, "status") else exc.__cause__
    status = getattr(cause, "status", None)
    return int(status) if isinstance(status, int) else None


def _conditions(job: Any) -> list[Any]:
    return list(getattr(getattr(job, "status", None), "conditions", None) or [])


def _true(job: Any, kind: str) -> Any | None:
    for condition in _conditions(job):
        if condition.type == kind and condition.status == "True":
            return condition
    return None


class _Interrupted(BaseException):
    """Raised by the SIGTERM handler. A BaseException, so the SDK's `except Exception`
    wrappers cannot turn a cancellation into a retryable API error."""


@contextlib.contextmanager
def _cancel_on_signal() -> Iterator[None]:
    """Turn SIGTERM (a cancelled KFP run, a deleted pod) into _Interrupted in the main thread."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, _frame: Any) -> None:
        raise _Interrupted(signal.Signals(signum).name)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _create(client: Any, job: Any, spec: LaunchSpec) -> None:
    """Create the job; a leftover job of the same run (a retried step) is replaced or re-attached."""
    try:
        client.create_job(job=job, namespace=spec.namespace)
        log.info("created PyTorchJob %s/%s (%d node(s) x %d proc(s), image %s)",
                 spec.namespace, spec.job_name, spec.num_workers, spec.procs_per_worker, spec.image)
        return
    except RuntimeError as exc:
        if _status(exc) != 409:
            raise TrainingFailed(f"PyTorchJob {spec.namespace}/{spec.job_name}: create failed: {exc}") from exc
    existing = client.get_job(name=spec.job_name, namespace=spec.namespace, timeout=REQUEST_TIMEOUT_S)
    if not (_true(existing, SUCCEEDED) or _true(existing, FAILED)):
        log.warning("PyTorchJob %s/%s already exists and is unfinished: attaching to it", spec.namespace, spec.job_name)
        return
    log.warning("PyTorchJob %s/%s exists from an earlier attempt and has finished: replacing it",
                spec.namespace, spec.job_name)
    delete_job(spec.job_name, spec.namespace, client=client)
    _wait_gone(client, spec)
    client.create_job(job=job, namespace=spec.namespace)


def _wait_gone(client: Any, spec: LaunchSpec, limit_s: float = 120.0) -> None:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        try:
            client.get_job(name=spec.job_name, namespace=spec.namespace, timeout=REQUEST_TIMEOUT_S)
        except RuntimeError as exc:
            if _status(exc) == 404:
                return
        time.sleep(min(spec.poll_interval_s, 2.0))
    raise TrainingFailed(f"PyTorchJob {spec.namespace}/{spec.job_name}: old job still present after {limit_s:.0f}s")


class _OnPoll:
    """Called by the SDK after every poll: logs each new condition once (Created -> Running ->
    Restarting -> Succeeded/Failed) and enforces our deadline. The SDK's own loop runs
    `wait_timeout / polling_interval` polls and does not count the requests' time, so alone it
    overshoots a deadline by one request latency per poll."""

    def __init__(self, spec: LaunchSpec, deadline: float) -> None:
        self.spec = spec
        self.deadline = deadline
        self.seen: set[tuple[str, str]] = set()

    def __call__(self, job: Any) -> None:
        for condition in _conditions(job):
            key = (condition.type, condition.status)
            if condition.status == "True" and key not in self.seen:
                self.seen.add(key)
                log.info("PyTorchJob %s: %s (%s)", self.spec.job_name, condition.type, condition.reason or "-")
        finished = _true(job, SUCCEEDED) or _true(job, FAILED)
        if not finished and time.monotonic() >= self.deadline:
            raise _timeout(self.spec)


def _timeout(spec: LaunchSpec) -> LaunchTimeout:
    return LaunchTimeout(f"PyTorchJob {spec.namespace}/{spec.job_name}: not finished after {spec.timeout_s:g}s (our timeout)")


def _wait(client: Any, spec: LaunchSpec, deadline: float) -> Any:
    """Poll until Succeeded or Failed, bounded by `deadline`; transient API errors are retried."""
    on_poll = _OnPoll(spec, deadline)
    errors = 0
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise _timeout(spec)
        try:
            return client.wait_for_job_conditions(
                name=spec.job_name,
                namespace=spec.namespace,
                expected_conditions={SUCCEEDED, FAILED},
                wait_timeout=remaining,
                polling_interval=min(spec.poll_interval_s, max(remaining, 1e-3)),
                callback=on_poll,
                timeout=max(1, int(min(REQUEST_TIMEOUT_S, remaining + 1))),
            )
        except TimeoutError:
            continue  # either our deadline (checked above) or one slow request
        except RuntimeError as exc:
            errors += 1
            if _status(exc) == 404:
                raise TrainingFailed(f"PyTorchJob {spec.namespace}/{spec.job_name}: deleted while running") from exc
            if errors >= MAX_CONSECUTIVE_API_ERRORS:
                raise TrainingFailed(f"PyTorchJob {spec.namespace}/{spec.job_name}: API unreachable: {exc}") from exc
            log.warning("PyTorchJob %s: API error while waiting (%d/%d): %s", spec.job_name, errors,
                        MAX_CONSECUTIVE_API_ERRORS, exc)
            time.sleep(min(spec.poll_interval_s, 5.0))


def _container_state(pod: Any) -> str:
    """`pytorch: terminated OOMKilled exit 137` style summary of a pod's trainer container."""
    parts = []
    status = pod.status
    for cs in (getattr(status, "container_statuses", None) or []):
        for label, state in (("now", cs.state), ("previous", cs.last_state)):
            if state is None:
                continue
            if state.terminated is not None:
                t = state.terminated
                parts.append(f"{cs.name} {label} terminated {t.reason or ''} exit {t.exit_code}"
                             + (f": {t.message.strip()[:300]}" if t.message else ""))
            elif state.waiting is not None and label == "now":
                w = state.waiting
                parts.append(f"{cs.name} waiting {w.reason or ''}" + (f": {w.message.strip()[:300]}" if w.message else ""))
    for condition in (getattr(status, "conditions", None) or []):
        if condition.status == "False" and condition.message:
            parts.append(f"{condition.type}=False: {condition.message.strip()[:300]}")
    phase = getattr(status, "phase", None) or "Unknown"
    return f"{phase}" + (f" ({'; '.join(parts)})" if parts else "")


def explain(client: Any, spec: LaunchSpec, job: Any | None) -> str:
    """Failure reasons and each pod's state and log tail, as one readable block."""
    lines = []
    for condition in _conditions(job):
        if condition.status == "True" and condition.type in (FAILED, "Restarting"):
            lines.append(f"condition {condition.type}: {condition.reason}: {condition.message}")
    try:
        pods = client.get_job_pods(name=spec.job_name, namespace=spec.namespace, timeout=REQUEST_TIMEOUT_S)
    except Exception as exc:  # explaining must never hide the original failure
        return "\n".join([*lines, f"(could not list pods: {exc})"])
    pods = sorted(pods, key=lambda p: ("master" not in p.metadata.name, p.metadata.name))
    for pod in pods:
        lines.append(f"pod {pod.metadata.name}: {_container_state(pod)}")
        if spec.log_tail_lines <= 0 or (pod.status and pod.status.phase == "Pending"):
            continue
        try:
            text = client.core_api.read_namespaced_pod_log(
                name=pod.metadata.name, namespace=spec.namespace, container=CONTAINER_NAME,
                tail_lines=spec.log_tail_lines, _request_timeout=REQUEST_TIMEOUT_S,
            )
        except Exception as exc:
            lines.append(f"  (no logs: {exc})")
            continue
        tail = [line for line in str(text).splitlines() if line.strip()]
        lines.extend(f"  | {line}" for line in tail)
    return "\n".join(lines)


def delete_job(name: str, namespace: str, client: Any = None, kubeconfig: str | None = None) -> bool:
    """Delete a PyTorchJob (and, by propagation, its pods); False if it was already gone."""
    from kubeflow.training import models

    client = client or make_client(namespace, kubeconfig)
    try:
        client.delete_job(name=name, namespace=namespace,
                          delete_options=models.V1DeleteOptions(propagation_policy="Background"))
    except RuntimeError as exc:
        if _status(exc) == 404:
            log.info("PyTorchJob %s/%s: already gone", namespace, name)
            return False
        raise
    log.info("deleted PyTorchJob %s/%s", namespace, name)
    return True


def _should_delete(policy: str, succeeded: bool) -> bool:
    return policy == "always" or (policy == "on_success" and succeeded)


def run_pytorchjob(spec: LaunchSpec, command: list[str], kubeconfig: str | None = None,
                   client: Any = None) -> LaunchResult:
    """Create the PyTorchJob, wait for Succeeded/Failed within `spec.timeout_s`, clean up."""
    client = client or make_client(spec.namespace, kubeconfig)
    job = build_pytorchjob(spec, command)
    start = time.monotonic()
    deadline = start + spec.timeout_s
    succeeded = False
    created = False
    final = None
    with _cancel_on_signal():
        try:
            _create(client, job, spec)
            created = True
            final = _wait(client, spec, deadline)
            if _true(final, FAILED):
                raise TrainingFailed(
                    f"PyTorchJob {spec.namespace}/{spec.job_name} Failed\n{explain(client, spec, final)}"
                )
            succeeded = True
        except LaunchTimeout as exc:
            raise LaunchTimeout(f"{exc}\n{explain(client, spec, final)}") from exc
        except (_Interrupted, KeyboardInterrupt) as exc:
            what = f"received {exc}" if isinstance(exc, _Interrupted) else "interrupted"
            raise LaunchCancelled(f"PyTorchJob {spec.namespace}/{spec.job_name}: {what}; job cancelled") from None
        finally:
            deleted = False
            if created and _should_delete(spec.cleanup, succeeded):
                try:
                    deleted = delete_job(spec.job_name, spec.namespace, client=client)
                except Exception as exc:  # cleanup must not mask the job's own outcome
                    log.error("could not delete PyTorchJob %s/%s: %s (ttlSecondsAfterFinished=%d will)",
                              spec.namespace, spec.job_name, exc, spec.ttl_seconds_after_finished)
    seconds = time.monotonic() - start
    log.info("PyTorchJob %s/%s Succeeded in %.1fs", spec.namespace, spec.job_name, seconds)
    return LaunchResult(backend="kubernetes", job_name=spec.job_name, status=SUCCEEDED, seconds=seconds, deleted=deleted)
