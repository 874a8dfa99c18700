"""A torchrun worker for the integration tests: the real trainer fed by in-memory synthetic batches.

Usage: torchrun ... tests/train/dist_worker.py --config_path=... --result=out.json [trainer overrides]

Rank 0 writes its TrainResult to --result, rank r > 0 to `<result>.rank<r>`; a RecapError is
printed as `rank <r>: error: <message>` and exits with its code, as the trainer's entry does.
The remaining flags stage the faults the robustness tests need (a short process-group
timeout, a slow or failing export, a lagging checkpoint listing, a rank whose data ends,
a staging directory per rank as on separate nodes).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time

from components.common.errors import RecapError, StorageError
from components.common.logs import setup_logging
from components.train import checkpoint, export
from components.train.__main__ import overrides_from, quiet_libraries
from components.train.config import load_train_config
from components.train.distributed import init_distributed, shutdown_distributed
from components.train.loop import train
from components.train.synthetic import synthetic_source
from components.trainer_command.flags import add_trainer_arguments


def main() -> int:
    parser = argparse.ArgumentParser()
    add_trainer_arguments(parser)
    parser.add_argument("--result", required=True)
    parser.add_argument("--data_seed", type=int, default=0)
    parser.add_argument("--pg_timeout_s", type=float, default=600.0)
    parser.add_argument("--spool_per_rank", help="RECAP_SPOOL_DIR=<this>/rank<r>: staging as on separate nodes")
    parser.add_argument("--stale_listing", action="store_true", help="ranks > 0 list save_dir without its newest step")
    parser.add_argument("--export_delay_s", type=float, default=0.0)
    parser.add_argument("--export_error", help="rank 0's export fails with this StorageError message")
    parser.add_argument("--marker_error", help="rank 0's commit-marker write fails with this StorageError message")
    parser.add_argument("--open_error_rank", type=int, help="opening the training data fails on this rank")
    parser.add_argument("--short_rank", type=int, help="this rank's training data ends after --short_batches")
    parser.add_argument("--short_batches", type=int, default=0)
    parser.add_argument("--count_downloads", action="store_true",
                        help="the result gets `downloaded`: bytes this rank fetched through storage.download, per URI")
    args = parser.parse_args()
    setup_logging()
    quiet_libraries()
    rank = int(os.environ.get("RANK", "0"))
    if args.spool_per_rank:
        os.environ["RECAP_SPOOL_DIR"] = os.path.join(args.spool_per_rank, f"rank{rank}")
    stage_faults(args, rank)
    downloaded = count_downloads() if args.count_downloads else None
    try:
        config = load_train_config(args.config_path, overrides_from(args))
        env = init_distributed(timeout_s=args.pg_timeout_s)
        schema = config.load_schema()
        size = config.train_data.global_batch(env.world_size)
        limit = args.short_batches if args.short_rank == env.rank else None
        train_batches = synthetic_source(schema, size, args.data_seed, env.rank, env.world_size, num_batches=limit)
        if args.open_error_rank == env.rank:
            train_batches = _failing_source
        eval_batches = synthetic_source(schema, size, args.data_seed, env.rank, env.world_size, offset=10**6)
        result = train(config, schema, env, train_batches, eval_batches, debug_loop=args.debug_loop)
    except RecapError as exc:
        print(f"rank {rank}: error: {exc}", file=sys.stderr, flush=True)
        return exc.exit_code
    with open(args.result if env.is_chief else f"{args.result}.rank{env.rank}", "w") as handle:
        json.dump(dataclasses.asdict(result) | ({"downloaded": downloaded} if downloaded is not None else {}), handle)
    shutdown_distributed()
    return 0


def _failing_source(start: int):
    raise StorageError("gs://bucket/data/train/_MANIFEST.json: 403 Forbidden")


def count_downloads() -> dict[str, int]:
    """Bytes this rank downloads through `storage.download` (what a gs:// resume fetches), per URI."""
    fetched: dict[str, int] = {}
    download = checkpoint.storage.download

    def counted(uri, local_path):
        path = download(uri, local_path)
        fetched[uri] = fetched.get(uri, 0) + os.path.getsize(path)
        return path

    checkpoint.storage.download = counted
    return fetched


def stage_faults(args: argparse.Namespace, rank: int) -> None:
    if args.stale_listing and rank > 0:
        listed = checkpoint.committed_steps
        checkpoint.committed_steps = lambda save_dir: listed(save_dir)[:-1]
    if args.export_delay_s or args.export_error:
        exported = export.export_model

        def slow_or_failing_export(*a, **kw):
            time.sleep(args.export_delay_s)
            if args.export_error:
                raise StorageError(args.export_error)
            return exported(*a, **kw)

        export.export_model = slow_or_failing_export
    if args.marker_error and rank == 0:
        write_json = checkpoint.storage.write_json

        def failing_marker_write(uri, value):
            if uri.endswith(checkpoint.COMMIT_MARKER):
                raise StorageError(args.marker_error)
            return write_json(uri, value)

        checkpoint.storage.write_json = failing_marker_write


if __name__ == "__main__":
    sys.exit(main())
