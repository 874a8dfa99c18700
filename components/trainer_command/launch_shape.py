"""Start-up checks of a launch's shape, made before any pod or process starts.

A job whose global batch does not divide by its ranks, or whose data has fewer shards than
ranks (every rank reads whole shards of its own), fails on every rank at start, after the
cluster has scheduled and pulled images for all its nodes. The launcher (`recap launch`, the
pipeline's train step) calls `check_launch_shape` first and stops with one line instead.

Reads the trainer YAML as data (no pydantic model of training, no torch): the launcher's
image has neither.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from components.common.config import read_yaml
from components.common.errors import ConfigError

# The data sections the trainer reads, and the flag that names each one's split.
SPLITS = (("train_data", "train_data"), ("validation_data", "validation_data"))
DEFAULT_GLOBAL_BATCH = 128  # components.train.config.DataConfig.global_batch_size


def processes_per_node(procs_per_worker: int, gpus_per_worker: int) -> int:
    """Training processes on one node: as asked, or (0) one per GPU, one on a node without GPUs.

    The one home of that rule: the launcher's spec and the pipeline's shard count both use it.
    """
    return procs_per_worker or gpus_per_worker or 1


def per_rank_batch(global_batch: int, per_rank: int | None, world_size: int, section: str,
                   context: str = "") -> int:
    """Examples per step on one of `world_size` ranks; ConfigError when the global batch does not divide.

    `section` is the config section ("train_data"); `context` prefixes the message (the launcher
    names the file and the launch shape). Shared by the trainer's config model and the
    torch-free launcher, so both refuse the same shapes with the same words.
    """
    if per_rank is not None:
        return per_rank
    if global_batch % world_size:
        raise ConfigError(
            f"{context}{section}.global_batch_size {global_batch} is not divisible by {world_size}; use a multiple "
            f"of {world_size} or set {section}.per_rank_batch_size (examples per rank, i.e. per GPU) instead")
    return global_batch // world_size


def describe(num_workers: int, procs_per_worker: int) -> str:
    return f"{num_workers * procs_per_worker} ranks ({num_workers} node(s) x {procs_per_worker} process(es))"


def check_launch_shape(config_path: str, flags: Mapping[str, str], num_workers: int, procs_per_worker: int,
                       shards: Mapping[str, int] | None = None, config_here: bool = True) -> None:
    """ConfigError (one line naming the config field) when the trainer could not start with this many ranks.

    `flags` are the trainer's flag values by name (TrainerArgs.flags); `shards` the shard count
    of each split by section name, when the caller knows it (the pipeline, from convert's output).
    `config_here=False`: the config path names a file in the training image, which this machine
    may not have (a launch from outside a checkout); the check is then skipped without it.
    """
    world_size = num_workers * procs_per_worker
    if not config_here and "://" not in config_path and not Path(config_path).is_file():
        return
    data = read_yaml(config_path)
    where = f"{config_path} on {describe(num_workers, procs_per_worker)}"
    for section, flag in SPLITS:
        settings = dict(data.get(section) or {})
        if section == "validation_data" and not settings:
            if not flags.get(flag):
                continue
            settings = dict(data.get("train_data") or {})  # the trainer's default for a flag-given split
        if section == "train_data" and flags.get("global_batch_size"):
            settings["global_batch_size"] = int(flags["global_batch_size"])
            settings.pop("per_rank_batch_size", None)
        per_rank = settings.get("per_rank_batch_size")
        per_rank_batch(int(settings.get("global_batch_size", DEFAULT_GLOBAL_BATCH)),
                       None if per_rank is None else int(per_rank), world_size, section, f"{where}: ")
        count = (shards or {}).get(section)
        if count is not None and count < world_size:
            raise ConfigError(
                f"{where}: the {section} split has {count} shard(s), and every rank reads at least one; convert "
                f"with shards >= {world_size} (convert_config `shards:`, or leave it unset: the pipeline "
                f"then writes enough)")
