"""`recap data-service dispatcher|worker`: the tf.data service's processes, by hand or in a pod."""

from __future__ import annotations

import argparse


def add_dispatcher_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--port", type=int, default=5050, help="gRPC port (0: any free port, printed)")
    parser.add_argument("--journal-dir", default=None,
                        help="journal directory: a restarted dispatcher recovers its jobs from it (fault tolerance)")
    parser.add_argument("--worker-timeout-s", type=float, default=10.0,
                        help="a worker silent this long is dropped and its splits given to the others")


def run_dispatcher(args: argparse.Namespace) -> int:
    from components.data_service.servers import serve_dispatcher

    serve_dispatcher(args.port, args.journal_dir, args.worker_timeout_s)
    return 0


def add_worker_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dispatcher", required=True, help="grpc://host:port of the dispatcher")
    parser.add_argument("--port", type=int, default=0, help="gRPC port (0: any free port)")
    parser.add_argument("--worker-host", default="localhost",
                        help="the name consumers reach this worker by (its pod IP or DNS name in a cluster)")


def run_worker(args: argparse.Namespace) -> int:
    from components.data_service.servers import serve_worker

    serve_worker(args.dispatcher, args.port, args.worker_host)
    return 0
