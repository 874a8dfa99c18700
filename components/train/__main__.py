"""Trainer entry, run by torchrun on every rank: `python -m components.train --config_path=...`.

Joins the process group from the torchrun environment (gloo on CPU, nccl on GPU), trains
from the converted splits, checkpoints, and exports the model at the end.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import sys
import warnings
from collections.abc import Sequence

import torch

from components.common.errors import RecapError
from components.common.logs import setup_logging
from components.train.config import OVERRIDE_FLAGS, config_to_yaml, load_train_config

log = logging.getLogger("components.train")


def add_trainer_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of the trainer itself (also forwarded by `recap train`)."""
    parser.add_argument("--config_path", "--config-path", dest="config_path", required=True,
                        help="trainer YAML (e.g. configs/local.yaml), local or gs://")
    parser.add_argument("--debug_loop", "--debug-loop", dest="debug_loop", action="store_true",
                        help="slow, verbose loop: every step logged with gradient norms, anomaly detection")
    for flag, path in OVERRIDE_FLAGS.items():
        kind = int if flag in ("num_train_steps", "global_batch_size") else str
        parser.add_argument(f"--{flag}", f"--{flag.replace('_', '-')}", dest=flag, type=kind, default=None,
                            help=f"override {path}")


def quiet_libraries(verbose: bool = False) -> None:
    """One log format and our INFO lines only: torchrec/fbgemm install their own root handler
    at import and log every TBE's arguments; their warnings about deprecated internals are noise.
    """
    root = logging.getLogger()
    for handler in list(root.handlers):
        if not getattr(handler, "_recap", False):
            root.removeHandler(handler)
    if verbose:
        return
    root.setLevel(logging.WARNING)
    logging.getLogger("components").setLevel(logging.INFO)
    for module in ("torch", "torchrec", "fbgemm_gpu"):
        warnings.filterwarnings("ignore", category=FutureWarning, module=module)
        warnings.filterwarnings("ignore", category=UserWarning, module=module)
    logging.getLogger("torchrec").setLevel(logging.ERROR)  # planner stats tables, topology advice


def overrides_from(args: argparse.Namespace) -> dict[str, object]:
    return {path: getattr(args, flag) for flag, path in OVERRIDE_FLAGS.items() if getattr(args, flag, None) is not None}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m components.train", description=__doc__.splitlines()[0])
    add_trainer_arguments(parser)
    args = parser.parse_args(argv)
    setup_logging()
    from components.train.distributed import init_distributed, shutdown_distributed
    from components.train.loop import reader_source, train

    quiet_libraries(verbose=args.debug_loop)

    try:
        config = load_train_config(args.config_path, overrides_from(args))
        env = init_distributed()
        if env.is_chief:
            print(f"recap trainer started at {dt.datetime.now().astimezone().isoformat(timespec='seconds')}", flush=True)
            log.info("resolved config (%s):\n%s", args.config_path, config_to_yaml(config))
        if config.training.num_threads:
            torch.set_num_threads(config.training.num_threads)
        schema = config.load_schema()
        seed = config.training.seed
        train_batches = reader_source(config.train_data, schema, env, seed, "train_data")
        eval_batches = (reader_source(config.validation_data, schema, env, seed, "validation_data")
                        if config.validation_data else None)
        result = train(config, schema, env, train_batches, eval_batches, debug_loop=args.debug_loop)
        if env.is_chief:
            log.info("training done step=%d model_dir=%s", result.step, result.model_dir)
        shutdown_distributed()
        return 0
    except RecapError as exc:
        print(f"components.train: error: {exc}", file=sys.stderr, flush=True)
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(main())
