"""Checkpoints with torch.distributed.checkpoint (DCP): one `<save_dir>/step_<n>/` per save.

A step directory counts only once rank 0 has written its `_COMMITTED` marker, after a
barrier that every rank reaches when its shards are on disk (and uploaded, for gs://).
A directory without the marker is an interrupted write and is never loaded; resume picks
the newest committed step. For gs:// save_dirs, DCP writes to a local staging directory
and every rank uploads its own files through `storage`, then deletes its local copies (a
node's staging directory goes with the last of its ranks), so long multi-node runs do not
fill the disks; the marker goes last. A gs:// checkpoint is loaded from a downloaded copy
that is deleted once every rank has loaded it; the ranks sharing a staging directory (a node)
download it once, by the lowest of them, instead of once per rank.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import re
import shutil
import socket
import tempfile
from pathlib import Path
from typing import Any

import torch.distributed as dist
import torch.distributed.checkpoint as dcp

from components.common import storage
from components.common.errors import StorageError
from components.train.constants import COMMIT_MARKER
from components.train.distributed import together

log = logging.getLogger(__name__)

_STEP_DIR = re.compile(r"^step_(\d+)$")


def step_dir(save_dir: str, step: int) -> str:
    return storage.join(save_dir, f"step_{step}")


def _staging_root() -> Path:
    root = Path(os.environ.get("RECAP_SPOOL_DIR") or tempfile.gettempdir()) / "recap-checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    return root


def staging_dir(uri: str) -> Path:
    """A local directory standing in for a gs:// step dir, the same on every rank of a node."""
    return _staging_root() / uri.replace("gs://", "").replace("/", "__")


def is_committed(directory: str) -> bool:
    return storage.exists(storage.join(directory, COMMIT_MARKER))


def committed_steps(save_dir: str) -> list[int]:
    """Steps with a committed checkpoint below `save_dir`, ascending."""
    steps = []
    if storage.is_gcs(save_dir):
        for uri in storage.list_uris(save_dir):
            rel = storage.relative_to(uri, save_dir.rstrip("/"))
            parts = rel.split("/")
            if len(parts) == 2 and parts[1] == COMMIT_MARKER and (m := _STEP_DIR.match(parts[0])):
                steps.append(int(m.group(1)))
    else:
        root = Path(save_dir)
        if root.is_dir():
            for child in root.iterdir():
                if (m := _STEP_DIR.match(child.name)) and (child / COMMIT_MARKER).exists():
                    steps.append(int(m.group(1)))
    return sorted(steps)


def latest_checkpoint(save_dir: str) -> tuple[int, str] | None:
    steps = committed_steps(save_dir)
    return (steps[-1], step_dir(save_dir, steps[-1])) if steps else None


def resolve_initial_checkpoint(uri: str) -> str:
    """A committed step dir, or the newest committed one below a save_dir."""
    uri = uri.rstrip("/")
    if is_committed(uri):
        return uri
    latest = latest_checkpoint(uri)
    if latest is None:
        from components.common.errors import StorageError

        raise StorageError(f"{uri}: no committed checkpoint (a step_<n>/ directory with {COMMIT_MARKER})")
    return latest[1]


def save(save_dir: str, step: int, state: dict[str, Any], rank: int, extra: dict[str, Any] | None = None) -> str:
    """Write `state` (collectively, every rank) to step_<step>/ and commit it."""
    target = step_dir(save_dir, step)
    remote = storage.is_gcs(target)
    local = staging_dir(target) if remote else Path(target)
    with together(f"{target}: clearing an interrupted write", StorageError):
        if rank == 0:  # a leftover of an interrupted write of the same step
            if local.exists():
                shutil.rmtree(local)
            if remote:
                storage.delete_prefix(target)
    dcp.save(state, checkpoint_id=str(local))
    with together(f"{target}: uploading checkpoint shards", StorageError):  # every rank's shards in place
        if remote:
            own = _own_staged_files(local, rank)
            try:
                for path in own:
                    storage.upload(path, storage.join(target, path.name))
            finally:
                _remove_staged(local, own)
    with together(f"{target}: writing the commit marker", StorageError):
        if rank == 0:
            marker = {"step": step, "world_size": dist.get_world_size(),
                      "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), **(extra or {})}
            storage.write_json(storage.join(target, COMMIT_MARKER), marker)
    return target


def load(directory: str, state: dict[str, Any], no_dist: bool = False) -> None:
    """Fill `state` in place from a committed step dir (downloading gs:// ones first)."""
    if not is_committed(directory):
        from components.common.errors import StorageError

        raise StorageError(f"{directory}: not a committed checkpoint (no {COMMIT_MARKER})")
    local = local_copy(directory) if no_dist else _node_copy(directory)
    dcp.load(state, checkpoint_id=str(local), no_dist=no_dist)
    if storage.is_gcs(directory):  # a downloaded copy, shared by the ranks of a node
        if not no_dist:
            dist.barrier()  # every rank has read what it needs from it
        shutil.rmtree(local, ignore_errors=True)


def _own_staged_files(local: Path, rank: int) -> list[Path]:
    """The files this rank wrote into a staging dir: its shards, and on rank 0 the metadata."""
    return [path for path in sorted(local.iterdir())
            if path.name.startswith(f"__{rank}_") or (rank == 0 and not path.name.startswith("__"))]


def _remove_staged(local: Path, own: list[Path]) -> None:
    """Delete this rank's staged files; the directory goes once its node's last rank is done.

    Ranks of a node share the staging dir and each deletes only its own files, so whichever
    rank empties it removes it (the others' `rmdir` fails on a non-empty or missing dir).
    """
    for path in own:
        path.unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        local.rmdir()


def _node_copy(directory: str) -> Path:
    """`local_copy` made once per staging directory: its lowest rank downloads, the others wait.

    Ranks that share a host and a staging path (the ranks of a node, unless RECAP_SPOOL_DIR
    differs) would otherwise each fetch the whole checkpoint into the same place: 8 copies of
    the traffic on an 8-GPU node. A failed download is raised on every rank.
    """
    if not storage.is_gcs(directory) or not dist.is_initialized():
        return local_copy(directory)
    local = staging_dir(directory)
    place = (socket.gethostname(), str(local.resolve()))
    places: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(places, place)
    with together(f"{directory}: downloading the checkpoint", StorageError):
        if places.index(place) == dist.get_rank():
            local_copy(directory)
    return local


def local_copy(directory: str) -> Path:
    """The step dir itself when local; a downloaded copy (in the staging area) for gs://."""
    if not storage.is_gcs(directory):
        return Path(directory)
    local = staging_dir(directory)
    for uri in storage.list_uris(directory):
        name = storage.relative_to(uri, directory.rstrip("/"))
        target = local / name
        if not target.exists() or target.stat().st_size != storage.size(uri):
            storage.download(uri, target)
    return local


def prune(save_dir: str, keep: int) -> list[int]:
    """Delete all but the newest `keep` committed checkpoints (marker first); rank 0 only."""
    steps = committed_steps(save_dir)
    removed = steps[:-keep] if keep > 0 else []
    for step in removed:
        target = step_dir(save_dir, step)
        storage.delete(storage.join(target, COMMIT_MARKER))
        storage.delete_prefix(target)
        if storage.is_gcs(target):
            shutil.rmtree(staging_dir(target), ignore_errors=True)
    return removed
