"""`recap train`: run the trainer under torchrun (standalone on one node, rendezvous on many)."""

from __future__ import annotations

import argparse
import logging
import subprocess

import torch  # noqa: F401  (torchrun runs the trainer here: without torch, fail at once with the router's hint)

from components.trainer_command.flags import add_trainer_arguments, config_overrides, flag_values
from components.trainer_command.torchrun import torchrun_command

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_trainer_arguments(parser)
    parser.add_argument("--nproc_per_node", "--nproc-per-node", dest="nproc_per_node", type=int, default=1)
    parser.add_argument("--nnodes", type=int, default=1)
    parser.add_argument("--max-restarts", "--max_restarts", dest="max_restarts", type=int, default=0)
    parser.add_argument("--rdzv_endpoint", "--rdzv-endpoint", dest="rdzv_endpoint", default=None)
    parser.add_argument("--node_rank", "--node-rank", dest="node_rank", type=int, default=None)


def run(args: argparse.Namespace) -> int:
    from components.train.config import load_train_config

    flags = flag_values(args)
    load_train_config(args.config_path, config_overrides(flags))  # fail fast, before starting processes
    command = torchrun_command(args.config_path, args.nproc_per_node, args.nnodes, args.max_restarts,
                               flags, args.debug_loop, args.rdzv_endpoint, node_rank=args.node_rank)
    log.info("running %s", " ".join(command))
    return subprocess.run(command, check=False).returncode
