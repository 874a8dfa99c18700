"""`recap train`: run the trainer under torchrun (standalone on one node, rendezvous on many)."""

from __future__ import annotations

import argparse
import logging
import subprocess
import sys
from collections.abc import Mapping, Sequence

from components.common.errors import ConfigError

log = logging.getLogger(__name__)

TORCHRUN = (sys.executable, "-m", "torch.distributed.run")


def torchrun_command(config_path: str, nproc_per_node: int = 1, nnodes: int = 1, max_restarts: int = 0,
                     overrides: Mapping[str, object] | None = None, debug_loop: bool = False,
                     rdzv_endpoint: str | None = None, rdzv_id: str = "recap", node_rank: int | None = None,
                     launcher: Sequence[str] = TORCHRUN) -> list[str]:
    """The torchrun command line that starts the trainer; pure, so launchers can reuse it.

    `overrides` maps trainer flags (train_data, save_dir, num_train_steps, ...) to values.
    One node without an endpoint runs `--standalone`; otherwise c10d rendezvous at the endpoint.
    """
    command = [*launcher, f"--nnodes={nnodes}", f"--nproc_per_node={nproc_per_node}",
               f"--max-restarts={max_restarts}"]
    if nnodes == 1 and rdzv_endpoint is None:
        # The workers meet the agent's store on loopback, not at the host name, which resolves
        # to nothing in a container without a network (`docker run --network none`).
        command += ["--standalone", "--local-addr=127.0.0.1"]
    else:
        if rdzv_endpoint is None:
            raise ConfigError(f"--rdzv_endpoint is required with --nnodes={nnodes} (host:port of node 0)")
        command += ["--rdzv_backend=c10d", f"--rdzv_endpoint={rdzv_endpoint}", f"--rdzv_id={rdzv_id}"]
        if node_rank is not None:
            command.append(f"--node_rank={node_rank}")
    command += ["-m", "components.train", f"--config_path={config_path}"]
    for flag, value in (overrides or {}).items():
        if value is not None:
            command.append(f"--{flag}={value}")
    if debug_loop:
        command.append("--debug_loop")
    return command


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from components.train.__main__ import add_trainer_arguments

    add_trainer_arguments(parser)
    parser.add_argument("--nproc_per_node", "--nproc-per-node", dest="nproc_per_node", type=int, default=1)
    parser.add_argument("--nnodes", type=int, default=1)
    parser.add_argument("--max-restarts", "--max_restarts", dest="max_restarts", type=int, default=0)
    parser.add_argument("--rdzv_endpoint", "--rdzv-endpoint", dest="rdzv_endpoint", default=None)
    parser.add_argument("--node_rank", "--node-rank", dest="node_rank", type=int, default=None)


def run(args: argparse.Namespace) -> int:
    from components.train.__main__ import overrides_from
    from components.train.config import OVERRIDE_FLAGS, load_train_config

    flags = {flag: getattr(args, flag) for flag in OVERRIDE_FLAGS}
    load_train_config(args.config_path, overrides_from(args))  # fail fast, before starting processes
    command = torchrun_command(args.config_path, args.nproc_per_node, args.nnodes, args.max_restarts,
                               flags, args.debug_loop, args.rdzv_endpoint, node_rank=args.node_rank)
    log.info("running %s", " ".join(command))
    return subprocess.run(command, check=False).returncode
