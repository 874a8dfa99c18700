"""`recap train`: run the trainer under torchrun (standalone on one node, rendezvous on many).

A failed run ends with the failing rank's one line and exit code (1 data, 2 config), not with
torchrun's failure block: the ranks report their errors (components.trainer_command.rank_errors)
and torchrun's output after the first report is held back. `--log-level DEBUG` shows it all,
the ranks' tracebacks included.
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
import tempfile

import torch  # noqa: F401  (torchrun runs the trainer here: without torch, fail at once with the router's hint)

from components.trainer_command import rank_errors
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
    level = (getattr(args, "log_level", None) or os.environ.get("RECAP_LOG_LEVEL") or "INFO").upper()
    with tempfile.TemporaryDirectory(prefix="recap-rank-errors-") as errors:
        env = {**os.environ, rank_errors.ENV: errors, "RECAP_LOG_LEVEL": level}
        code = subprocess.run(command, env=env, check=False).returncode if level == "DEBUG" else \
            run_holding_failure_output(command, env, errors)
        cause = rank_errors.root_cause(rank_errors.reported(errors))
    if code and cause is not None:
        raise rank_errors.RankFailed(cause)  # the router prints its one line and exits with its code
    return code


def run_holding_failure_output(command: list[str], env: dict[str, str], errors: str) -> int:
    """Run torchrun with its stderr passed through until a rank reports an error; what follows
    (other ranks stopping, torchrun's failure block) is shown only if no rank said why it failed."""
    held: list[str] = []
    proc = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True, bufsize=1)
    assert proc.stderr is not None
    for line in proc.stderr:
        if held or os.listdir(errors):
            held.append(line)
        else:
            sys.stderr.write(line)
            sys.stderr.flush()
    code = proc.wait()
    if not (code and rank_errors.reported(errors)):
        sys.stderr.writelines(held)
    return code
