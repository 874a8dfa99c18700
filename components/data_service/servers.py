"""Run a tf.data service dispatcher or dataset worker in this process until it is stopped.

The dispatcher keeps a journal in `journal_dir` when given (fault-tolerant mode): restarted
with the same directory, it recovers its datasets, jobs and the splits already handed out,
and consumers and workers reconnect to it. A worker registers with the dispatcher, heartbeats,
and runs the dataset pipelines the dispatcher gives it.

Each prints one machine-readable line when it serves (`data-service dispatcher
address=grpc://...`), which the launcher and the tests wait for.
"""

from __future__ import annotations

import logging
import sys

from components.records.service import dispatcher_host_port

log = logging.getLogger(__name__)

# The dispatcher drops a worker that missed heartbeats this long and gives its splits to others.
WORKER_TIMEOUT_S = 10.0
HEARTBEAT_S = 1.0


def _ready(kind: str, address: str) -> None:
    print(f"data-service {kind} address={address}", flush=True)


def serve_dispatcher(port: int, journal_dir: str | None, worker_timeout_s: float = WORKER_TIMEOUT_S) -> None:
    from tensorflow.data.experimental.service import DispatcherConfig, DispatchServer

    config = DispatcherConfig(port=port, protocol="grpc", work_dir=journal_dir or None,
                              fault_tolerant_mode=bool(journal_dir),
                              worker_timeout_ms=int(worker_timeout_s * 1000))
    server = DispatchServer(config)
    _ready("dispatcher", server.target)
    server.join()


def serve_worker(dispatcher: str, port: int, worker_host: str, heartbeat_s: float = HEARTBEAT_S) -> None:
    from tensorflow.data.experimental.service import WorkerConfig, WorkerServer

    host, dispatcher_port = dispatcher_host_port(dispatcher)
    config = WorkerConfig(dispatcher_address=f"{host}:{dispatcher_port}", worker_address=f"{worker_host}:%port%",
                          port=port, protocol="grpc", heartbeat_interval_ms=int(heartbeat_s * 1000))
    server = WorkerServer(config)
    _ready("worker", f"{worker_host}:{server._address.rpartition(':')[2]}")
    sys.stdout.flush()
    server.join()
