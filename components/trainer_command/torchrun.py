"""The torchrun command line that starts the trainer on one or many nodes; pure, so every
launcher (`recap train`, the local backend, a PyTorchJob) builds the same one."""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence

from components.common.errors import ConfigError
from components.trainer_command.flags import CONFIG_PATH, DEBUG_LOOP, flag_arguments

TRAINER_MODULE = "components.train"
TORCHRUN = (sys.executable, "-m", "torch.distributed.run")


def torchrun_command(config_path: str, nproc_per_node: int = 1, nnodes: int | str = 1, max_restarts: int = 0,
                     overrides: Mapping[str, object] | None = None, debug_loop: bool = False,
                     rdzv_endpoint: str | None = None, rdzv_id: str = "recap", node_rank: int | None = None,
                     launcher: Sequence[str] = TORCHRUN) -> list[str]:
    """`torchrun ... -m components.train --config_path=... [--flag=value ...]`.

    `overrides` maps trainer flags (flags.OVERRIDES: train_data, save_dir, num_train_steps, ...)
    to values; None values are left out. One node without an endpoint runs `--standalone`;
    otherwise c10d rendezvous at the endpoint (`nnodes` may be `min:max` for elastic jobs).
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
    command += ["-m", TRAINER_MODULE, f"--{CONFIG_PATH}={config_path}", *flag_arguments(overrides or {})]
    if debug_loop:
        command.append(f"--{DEBUG_LOOP}")
    return command
