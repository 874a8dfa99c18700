"""Run the same torchrun command as local processes (the `local` backend).

`num_workers` > 1 starts one torchrun agent per simulated node; they meet by c10d
rendezvous on 127.0.0.1, so a multi-node launch can be exercised on one machine. Output is streamed
through, and its tail kept for the failure message; when a rank reported why it failed
(components.trainer_command.rank_errors), that one line is the message, with the rank's exit
code. On timeout or SIGTERM every agent's process group is terminated (torchrun forwards the
signal to its trainers).
"""

from __future__ import annotations

import collections
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from typing import IO

from components.launch.spec import (
    LaunchCancelled,
    LaunchResult,
    LaunchSpec,
    LaunchTimeout,
    TrainingFailed,
)

log = logging.getLogger(__name__)

KILL_GRACE_S = 10.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def local_argv(command: list[str]) -> list[str]:
    """`torchrun ...` -> `<this python> -m torch.distributed.run ...`, so the venv need not be on PATH."""
    if command and os.path.basename(command[0]) == "torchrun":
        return [sys.executable, "-m", "torch.distributed.run", *command[1:]]
    return list(command)


def _pump(stream: IO[str], prefix: str, tail: collections.deque[str]) -> None:
    for line in iter(stream.readline, ""):
        tail.append(f"{prefix}{line.rstrip()}")
        sys.stdout.write(f"{prefix}{line}")
        sys.stdout.flush()


def _terminate(procs: list[subprocess.Popen[str]]) -> None:
    for proc in procs:
        if proc.poll() is None:
            with _suppress():
                os.killpg(proc.pid, signal.SIGTERM)
    end = time.monotonic() + KILL_GRACE_S
    for proc in procs:
        try:
            proc.wait(timeout=max(0.0, end - time.monotonic()))
        except subprocess.TimeoutExpired:
            with _suppress():
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


class _suppress:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> bool:
        return isinstance(exc[1], ProcessLookupError | PermissionError)


def run_torchrun(spec: LaunchSpec, command: list[str], env: dict[str, str] | None = None) -> LaunchResult:
    """Start `spec.num_workers` torchrun agents, wait for all within `spec.timeout_s`."""
    from components.trainer_command import rank_errors

    errors = tempfile.mkdtemp(prefix="recap-rank-errors-")
    full_env = {**os.environ, **dict(spec.env), **(env or {}), "PYTHONUNBUFFERED": "1", rank_errors.ENV: errors}
    tail: collections.deque[str] = collections.deque(maxlen=max(spec.log_tail_lines, 1))
    procs: list[subprocess.Popen[str]] = []
    pumps: list[threading.Thread] = []
    start = time.monotonic()
    deadline = start + spec.timeout_s
    cancelled: list[int] = []
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, lambda signum, _f: cancelled.append(signum))
    try:
        for rank in range(spec.num_workers):
            argv = local_argv(command)
            log.info("local node %d/%d: %s", rank, spec.num_workers, " ".join(argv))
            proc = subprocess.Popen(argv, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                    text=True, bufsize=1, start_new_session=True)
            procs.append(proc)
            prefix = f"[node{rank}] " if spec.num_workers > 1 else ""
            pump = threading.Thread(target=_pump, args=(proc.stdout, prefix, tail), daemon=True)
            pump.start()
            pumps.append(pump)
        while any(p.poll() is None for p in procs):
            if cancelled:
                raise LaunchCancelled(f"local job {spec.job_name}: received SIGTERM; processes stopped")
            if time.monotonic() > deadline:
                raise LaunchTimeout(f"local job {spec.job_name}: not finished after {spec.timeout_s:.0f}s")
            if any(p.returncode not in (None, 0) for p in procs):
                break  # one node failed: the rest would wait for it at the next collective
            time.sleep(0.2)
    except BaseException:
        _terminate(procs)
        shutil.rmtree(errors, ignore_errors=True)
        raise
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        for pump in pumps:
            pump.join(timeout=5)
    _terminate(procs)
    codes = [p.returncode for p in procs]
    seconds = time.monotonic() - start
    cause = rank_errors.root_cause(rank_errors.reported(errors))
    shutil.rmtree(errors, ignore_errors=True)
    if any(codes) and cause is not None:
        failed = TrainingFailed(cause.message)
        failed.exit_code = cause.exit_code
        raise failed
    if any(codes):
        last = "\n".join(f"  | {line}" for line in tail)
        raise TrainingFailed(f"local job {spec.job_name}: torchrun exit codes {codes}\n{last}")
    log.info("local job %s Succeeded in %.1fs", spec.job_name, seconds)
    return LaunchResult(backend="local", job_name=spec.job_name, status="Succeeded", seconds=seconds)
