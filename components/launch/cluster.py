"""Run training as a Kubeflow PyTorchJob: create, wait, explain a failure, delete.

Where the published Kubeflow launcher goes wrong, this one does not:
- the wait is our own poll loop, bounded by our own deadline, and transient API errors during
  a long wait are retried instead of failing a day of training;
- every poll also captures the pods' container ends (OOMKilled, exit codes, log tails) as
  they happen (components/launch/diagnostics.py): the operator deletes the pods before it
  writes Failed, so a report read afterwards would have nothing but its one-line reason;
- the job is deleted on success, failure, timeout and cancellation per the cleanup policy.
  A terminated KFP run stops its step pods with SIGTERM (SIGKILL after the grace period); the
  handler deletes the job, also when the signal lands while the create request is in flight.
  Without SIGTERM (a lost node, SIGKILL), the job's ownerReference to the step pod lets
  Kubernetes delete it with that pod, and its activeDeadlineSeconds ends it at the latest.
  The pipeline's exit handler calls `delete_job` as a backstop on finished runs.

With `data_service_workers` > 0 the job gets a tf.data service owned by it
(components/launch/cluster_service.py), created right after the job, whose uid it needs.

API calls made (the RBAC Role in manifests/ grants exactly these and the tests record them):
create/get/delete `pytorchjobs` in `kubeflow.org`, list `pods`, get `pods/log`; with a data
service also create/delete `pods` and `services` (delete only when the job is kept).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import signal
import threading
import time
from collections.abc import Iterator
from typing import Any

from components.common.errors import StorageError
from components.launch.cluster_service import create_service, delete_service
from components.launch.diagnostics import PodWatcher
from components.launch.pytorchjob import build_pytorchjob
from components.launch.spec import (
    LaunchCancelled,
    LaunchResult,
    LaunchSpec,
    LaunchTimeout,
    PodRef,
    TrainingFailed,
)

log = logging.getLogger(__name__)

SUCCEEDED, FAILED = "Succeeded", "Failed"
REQUEST_TIMEOUT_S = 60
MAX_CONSECUTIVE_API_ERRORS = 8
# Set in every KFP v2 step pod from the downward API (metadata.name / metadata.uid).
POD_NAME_ENV, POD_UID_ENV = "KFP_POD_NAME", "KFP_POD_UID"
SERVICE_ACCOUNT_NAMESPACE_FILE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"


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


def _api_message(exc: BaseException) -> str:
    """The API server's own message (a Status body) rather than the client's whole dump."""
    import json

    cause = exc if hasattr(exc, "body") else exc.__cause__
    try:
        return str(json.loads(getattr(cause, "body", None) or "")["message"])
    except (ValueError, TypeError, KeyError):
        return str(exc)


def _conditions(job: Any) -> list[Any]:
    return list(getattr(getattr(job, "status", None), "conditions", None) or [])


def _true(job: Any, kind: str) -> Any | None:
    for condition in _conditions(job):
        if condition.type == kind and condition.status == "True":
            return condition
    return None


class CreateRefused(TrainingFailed):
    """The API server refused the job (RBAC, a webhook denial, a schema error): nothing exists."""


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
            raise CreateRefused(f"PyTorchJob {spec.namespace}/{spec.job_name}: create failed ({_status(exc)}): "
                                f"{_api_message(exc)}") from exc
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


def _timeout(spec: LaunchSpec) -> LaunchTimeout:
    return LaunchTimeout(f"PyTorchJob {spec.namespace}/{spec.job_name}: not finished after {spec.timeout_s:g}s (our timeout)")


def _wait(client: Any, spec: LaunchSpec, deadline: float, watcher: PodWatcher) -> Any:
    """Poll the job until Succeeded or Failed, bounded by `deadline`; each poll also lets the
    watcher capture pod states. Transient API errors are retried; a vanished job is an error."""
    seen: set[str] = set()
    errors = 0
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise _timeout(spec)
        try:
            job = client.get_job(name=spec.job_name, namespace=spec.namespace,
                                 timeout=max(1, int(min(REQUEST_TIMEOUT_S, remaining + 1))))
            errors = 0
        except (RuntimeError, TimeoutError) as exc:
            if _status(exc) == 404:
                raise TrainingFailed(f"PyTorchJob {spec.namespace}/{spec.job_name}: deleted while we waited for it "
                                     f"(by someone else, or by its ttlSecondsAfterFinished)\n{watcher.report([])}"
                                     ) from exc
            errors += 1
            if errors >= MAX_CONSECUTIVE_API_ERRORS:
                raise TrainingFailed(f"PyTorchJob {spec.namespace}/{spec.job_name}: API unreachable: {exc}") from exc
            log.warning("PyTorchJob %s: API error while waiting (%d/%d): %s", spec.job_name, errors,
                        MAX_CONSECUTIVE_API_ERRORS, exc)
            time.sleep(min(spec.poll_interval_s, 5.0, max(remaining, 0.0)))
            continue
        for condition in _conditions(job):
            if condition.status == "True" and condition.type not in seen:
                seen.add(condition.type)
                log.info("PyTorchJob %s: %s (%s)", spec.job_name, condition.type, condition.reason or "-")
        watcher.poll()
        if _true(job, SUCCEEDED) or _true(job, FAILED):
            return job
        time.sleep(min(spec.poll_interval_s, max(deadline - time.monotonic(), 0.0)))


def explain(job: Any | None, watcher: PodWatcher) -> str:
    """The operator's reason, then what the watcher captured and the pods left now."""
    lines = [f"condition {c.type}: {c.reason}: {c.message}" for c in _conditions(job)
             if c.status == "True" and c.type in (FAILED, "Restarting")]
    lines.append(watcher.report(watcher.poll()))
    return "\n".join(line for line in lines if line)


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


def launcher_pod(job_namespace: str, namespace_file: str | None = None) -> PodRef | None:
    """The step pod we run in, if it can own a job in `job_namespace` (same namespace only)."""
    name, uid = os.environ.get(POD_NAME_ENV, ""), os.environ.get(POD_UID_ENV, "")
    try:
        with open(namespace_file or SERVICE_ACCOUNT_NAMESPACE_FILE) as handle:
            own_namespace = handle.read().strip()
    except OSError:
        return None
    if not (name and uid):
        return None
    if own_namespace != job_namespace:
        log.warning("PyTorchJob in %s, launcher pod in %s: no ownerReference (Kubernetes allows none across "
                    "namespaces); if this pod is killed without SIGTERM, activeDeadlineSeconds ends the job",
                    job_namespace, own_namespace)
        return None
    return PodRef(name=name, uid=uid)


def _job_uid(client: Any, spec: LaunchSpec) -> str:
    """The created job's uid, which its dependents' ownerReferences must name."""
    job = client.get_job(name=spec.job_name, namespace=spec.namespace, timeout=REQUEST_TIMEOUT_S)
    uid = getattr(job.metadata, "uid", None)
    if not uid:
        raise TrainingFailed(f"PyTorchJob {spec.namespace}/{spec.job_name}: the API server returned no uid")
    return str(uid)


def _should_delete(policy: str, succeeded: bool) -> bool:
    return policy == "always" or (policy == "on_success" and succeeded)


def run_pytorchjob(spec: LaunchSpec, command: list[str], kubeconfig: str | None = None,
                   client: Any = None) -> LaunchResult:
    """Create the PyTorchJob, wait for Succeeded/Failed within `spec.timeout_s`, clean up."""
    client = client or make_client(spec.namespace, kubeconfig)
    if spec.owner is None:
        spec = dataclasses.replace(spec, owner=launcher_pod(spec.namespace))
    job = build_pytorchjob(spec, command)
    watcher = PodWatcher(client, spec)
    start = time.monotonic()
    deadline = start + spec.timeout_s
    succeeded = False
    create_sent = False  # a SIGTERM may land while the create request is in flight
    final = None
    service = None
    with _cancel_on_signal():
        try:
            create_sent = True
            _create(client, job, spec)
            if spec.data_service_workers:
                service = create_service(client, spec, _job_uid(client, spec))
            final = _wait(client, spec, deadline, watcher)
            if _true(final, FAILED):
                raise TrainingFailed(
                    f"PyTorchJob {spec.namespace}/{spec.job_name} Failed\n{explain(final, watcher)}"
                )
            succeeded = True
        except LaunchTimeout as exc:
            raise LaunchTimeout(f"{exc}\n{explain(final, watcher)}") from exc
        except CreateRefused:
            create_sent = False  # the API server answered: nothing was created
            raise
        except (_Interrupted, KeyboardInterrupt) as exc:
            what = f"received {exc}" if isinstance(exc, _Interrupted) else "interrupted"
            raise LaunchCancelled(f"PyTorchJob {spec.namespace}/{spec.job_name}: {what}; job cancelled") from None
        finally:
            deleted = job_gone = False
            if create_sent and _should_delete(spec.cleanup, succeeded):
                try:
                    deleted = delete_job(spec.job_name, spec.namespace, client=client)
                    job_gone = True  # its data service goes with it (garbage collection)
                except Exception as exc:  # cleanup must not mask the job's own outcome
                    log.error("could not delete PyTorchJob %s/%s: %s (ttlSecondsAfterFinished=%d will)",
                              spec.namespace, spec.job_name, exc, spec.ttl_seconds_after_finished)
            if service is not None and not job_gone:
                delete_service(client, spec, service)  # a kept job keeps its pods' logs, not an idle service
    seconds = time.monotonic() - start
    log.info("PyTorchJob %s/%s Succeeded in %.1fs", spec.namespace, spec.job_name, seconds)
    return LaunchResult(backend="kubernetes", job_name=spec.job_name, status=SUCCEEDED, seconds=seconds, deleted=deleted)
