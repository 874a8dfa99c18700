"""A tf.data service (one dispatcher, N dataset workers) as local processes for one local job.

Started before the trainer and removed after it, whatever happened (success, failure,
timeout, SIGTERM): `data_service` is a context manager whose exit terminates every process
group it started. The dispatcher keeps its journal in a temporary directory removed with it.
Each process's output goes to a log file; a process that dies while starting fails the
launch with the tail of its log.
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass

from components.launch.local import _terminate, free_port
from components.launch.spec import TrainingFailed

log = logging.getLogger(__name__)

START_TIMEOUT_S = 300.0  # importing TensorFlow on a loaded machine can take minutes
READY = "address="


def _tail(path: str, lines: int = 20) -> str:
    with open(path, errors="replace") as f:
        return "".join(f.readlines()[-lines:])


def _start(argv: list[str], log_path: str) -> subprocess.Popen[bytes]:
    with open(log_path, "wb") as out:
        return subprocess.Popen([sys.executable, "-m", "components.cli", "data-service", *argv],
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"})


def _wait_ready(proc: subprocess.Popen[bytes], log_path: str, what: str, deadline: float) -> None:
    """Poll the process's log for its ready line; a process that exits first fails the launch."""
    while True:
        with open(log_path, errors="replace") as f:
            if any(line.startswith("data-service ") and READY in line for line in f):
                return
        if proc.poll() is not None:
            raise TrainingFailed(f"data service {what} exited with code {proc.returncode} while starting:\n"
                                 f"{_tail(log_path)}")
        if time.monotonic() > deadline:
            raise TrainingFailed(f"data service {what} not ready after {START_TIMEOUT_S:.0f}s:\n{_tail(log_path)}")
        time.sleep(0.2)


@dataclass(frozen=True)
class LocalDataService:
    dispatcher: str  # grpc://127.0.0.1:port
    pids: tuple[int, ...]  # dispatcher first, then the workers (each leads its own process group)
    journal_dir: str  # the dispatcher's journal: a dispatcher restarted with it recovers its jobs


@contextlib.contextmanager
def data_service(workers: int, job_name: str) -> Iterator[LocalDataService]:
    """Run a dispatcher and `workers` dataset workers on loopback until the block ends."""
    procs: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory(prefix=f"{job_name}-data-service-") as root:
        try:
            port = free_port()
            address = f"grpc://127.0.0.1:{port}"
            deadline = time.monotonic() + START_TIMEOUT_S
            dispatcher_log, journal = os.path.join(root, "dispatcher.log"), os.path.join(root, "journal")
            procs.append(_start(["dispatcher", f"--port={port}", f"--journal-dir={journal}"], dispatcher_log))
            _wait_ready(procs[0], dispatcher_log, "dispatcher", deadline)
            logs = []
            for index in range(workers):
                logs.append(os.path.join(root, f"worker-{index}.log"))
                procs.append(_start(["worker", f"--dispatcher={address}", "--worker-host=127.0.0.1"], logs[-1]))
            for index, (proc, path) in enumerate(zip(procs[1:], logs, strict=True)):
                _wait_ready(proc, path, f"worker {index}", deadline)
            log.info("local data service for %s: dispatcher %s, %d workers (pids %s)", job_name, address, workers,
                     " ".join(str(p.pid) for p in procs))
            yield LocalDataService(address, tuple(p.pid for p in procs), journal)
        finally:
            _terminate(procs)
