"""What the pods of a PyTorchJob went through, captured while it runs, for the failure report.

Why while it runs: with restartPolicy OnFailure a failing trainer container restarts in place
(the pod stays Running, its restartCount grows), and the Training Operator ends such a job
through backoffLimit or activeDeadlineSeconds by deleting every pod *before* it writes the
Failed condition. Read after Failed, there is nothing left but "reached the specified backoff
limit". So every poll lists the job's pods, and whenever a container has ended since the last
poll (restartCount grew, or it is terminated now) its reason, exit code and log tail are kept:
the previous instance's log (`previous=true`) for a restarted container.

API calls: list pods (by the operator's job-name label), get pods/log.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass
from typing import Any

from components.launch.pytorchjob import CONTAINER_NAME
from components.launch.spec import LaunchSpec

log = logging.getLogger(__name__)

REQUEST_TIMEOUT_S = 60
MAX_ENDS_KEPT = 64
WAITING_PROBLEMS = frozenset({"ImagePullBackOff", "ErrImagePull", "InvalidImageName", "CreateContainerConfigError",
                              "CreateContainerError", "CrashLoopBackOff", "RunContainerError"})


@dataclass(frozen=True)
class ContainerEnd:
    """One terminated instance of a pod's trainer container."""

    pod: str
    restarts_before: int  # how often the container had restarted before this instance ran
    reason: str
    exit_code: int
    message: str
    finished_at: str
    log_tail: tuple[str, ...]

    def summary(self) -> str:
        text = f"pod {self.pod}: {CONTAINER_NAME} terminated {self.reason or '?'} exit {self.exit_code}"
        when = f" at {self.finished_at}" if self.finished_at else ""
        message = f": {self.message.strip()[:300]}" if self.message else ""
        return f"{text}{when} (after {self.restarts_before} restarts){message}"


def _trainer_status(pod: Any) -> Any | None:
    for status in getattr(pod.status, "container_statuses", None) or []:
        if status.name == CONTAINER_NAME:
            return status
    return None


def _when(state: Any) -> str:
    value = getattr(state, "finished_at", None)
    return value.isoformat() if hasattr(value, "isoformat") else str(value or "")


def pod_state(pod: Any) -> str:
    """`Running (pytorch running, restarts 2; last: OOMKilled exit 137)` style summary."""
    phase = getattr(pod.status, "phase", None) or "Unknown"
    status = _trainer_status(pod)
    if status is None:
        conditions = _false_conditions(pod)
        return f"{phase} ({'; '.join(conditions)})" if conditions else phase
    parts = [f"restarts {status.restart_count or 0}"]
    state = status.state
    if state is not None and state.terminated is not None:
        parts.insert(0, f"{CONTAINER_NAME} terminated {state.terminated.reason or ''} exit {state.terminated.exit_code}")
    elif state is not None and state.waiting is not None:
        waiting = state.waiting
        parts.insert(0, f"{CONTAINER_NAME} waiting {waiting.reason or ''}"
                     + (f": {waiting.message.strip()[:300]}" if waiting.message else ""))
    elif state is not None and state.running is not None:
        parts.insert(0, f"{CONTAINER_NAME} running")
    last = getattr(status.last_state, "terminated", None)
    if last is not None:
        parts.append(f"last: {last.reason or '?'} exit {last.exit_code}")
    return f"{phase} ({'; '.join(parts + _false_conditions(pod))})"


def _false_conditions(pod: Any) -> list[str]:
    """E.g. `PodScheduled=False: 0/3 nodes are available: 3 Insufficient nvidia.com/gpu`."""
    return [f"{c.type}=False: {c.message.strip()[:300]}" for c in getattr(pod.status, "conditions", None) or []
            if c.status == "False" and c.message]


class PodWatcher:
    """Polled once per job poll; keeps each container end it sees, with its log tail."""

    def __init__(self, client: Any, spec: LaunchSpec) -> None:
        self.client = client
        self.spec = spec
        self.ends: deque[ContainerEnd] = deque(maxlen=MAX_ENDS_KEPT)
        self.first_end: ContainerEnd | None = None
        self.pods: dict[str, Any] = {}  # name -> last pod seen (also after the pod is gone)
        self._restarts: dict[str, int] = {}
        self._ends_seen: set[tuple[str, int]] = set()  # (pod, instance): one end is reported once
        self._waiting: dict[str, str] = {}

    def poll(self) -> list[Any]:
        """List the job's pods and capture what ended since the last poll; API errors only log."""
        try:
            pods = self.client.get_job_pods(name=self.spec.job_name, namespace=self.spec.namespace,
                                            timeout=REQUEST_TIMEOUT_S)
        except Exception as exc:  # diagnostics must never fail the launch
            log.warning("PyTorchJob %s: could not list pods: %s", self.spec.job_name, exc)
            return []
        for pod in pods:
            self._observe(pod)
        return list(pods)

    def _observe(self, pod: Any) -> None:
        name = pod.metadata.name
        self.pods[name] = pod
        status = _trainer_status(pod)
        if status is None:
            return
        restarts = int(status.restart_count or 0)
        previous = self._restarts.get(name, 0)
        self._restarts[name] = restarts
        last = getattr(status.last_state, "terminated", None)
        if restarts > previous and last is not None and (name, restarts - 1) not in self._ends_seen:
            if restarts - previous > 1:
                log.warning("PyTorchJob %s: pod %s restarted %d times between two polls; kept the last end",
                            self.spec.job_name, name, restarts - previous)
            self._record(pod, restarts - 1, last, previous_log=True)
        now = getattr(status.state, "terminated", None)
        if now is not None and now.exit_code != 0 and (name, restarts) not in self._ends_seen:
            self._record(pod, restarts, now, previous_log=False)
        waiting = getattr(status.state, "waiting", None)
        reason = getattr(waiting, "reason", None) or ""
        if reason in WAITING_PROBLEMS and self._waiting.get(name) != reason:
            log.warning("PyTorchJob %s: pod %s %s", self.spec.job_name, name, pod_state(pod))
        self._waiting[name] = reason

    def _record(self, pod: Any, instance: int, terminated: Any, previous_log: bool) -> None:
        self._ends_seen.add((pod.metadata.name, instance))
        end = ContainerEnd(
            pod=pod.metadata.name, restarts_before=instance, reason=terminated.reason or "",
            exit_code=int(terminated.exit_code if terminated.exit_code is not None else -1),
            message=terminated.message or "", finished_at=_when(terminated),
            log_tail=self._log_tail(pod.metadata.name, previous_log),
        )
        log.warning("PyTorchJob %s: %s", self.spec.job_name, end.summary())
        self.ends.append(end)
        if self.first_end is None or (end.finished_at and end.finished_at < self.first_end.finished_at):
            self.first_end = end

    def _log_tail(self, pod: str, previous: bool) -> tuple[str, ...]:
        if self.spec.log_tail_lines <= 0:
            return ()
        try:
            text = self.client.core_api.read_namespaced_pod_log(
                name=pod, namespace=self.spec.namespace, container=CONTAINER_NAME, previous=previous,
                tail_lines=self.spec.log_tail_lines, _request_timeout=REQUEST_TIMEOUT_S,
            )
        except Exception as exc:
            return (f"(no logs: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__})",)
        return tuple(line for line in str(text).splitlines() if line.strip())

    def report(self, pods_now: list[Any]) -> str:
        """The failing pods first: the first container end seen, every end, each pod's last log tail."""
        lines: list[str] = []
        if self.first_end is not None:
            lines.append(f"first failure: {self.first_end.summary()}")
        if self.ends:
            lines.append("container ends seen while the job ran (oldest first):")
            lines += [f"  {end.summary()}" for end in sorted(self.ends, key=lambda e: e.finished_at)]
        shown: set[str] = set()
        for end in [e for e in (self.first_end,) if e] + list(reversed(self.ends)):
            if end.pod in shown or not end.log_tail:
                continue
            shown.add(end.pod)
            lines.append(f"log tail of {end.pod} ({end.reason or '?'} exit {end.exit_code}):")
            lines += [f"  | {line}" for line in end.log_tail]
        now = {pod.metadata.name: pod for pod in pods_now}
        if now:
            for name, pod in sorted(now.items(), key=lambda item: ("master" not in item[0], item[0])):
                lines.append(f"pod {name} now: {pod_state(pod)}")
                if name not in shown and getattr(pod.status, "phase", None) != "Pending":
                    tail = self._log_tail(name, previous=False)
                    lines += [f"  | {line}" for line in tail]
        elif self.pods:
            lines.append("pods now: none (the operator deletes them when it fails a job); last seen: "
                         + "; ".join(f"{n} {pod_state(p)}" for n, p in sorted(self.pods.items())))
        return "\n".join(lines)
