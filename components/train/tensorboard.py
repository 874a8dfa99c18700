"""TensorBoard scalars of a training run, written by rank 0.

For a gs:// save_dir the event files are written to a local staging directory and uploaded at
every checkpoint (so a long run shows its curves while it trains) and when closed.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from components.common import storage
from components.train import checkpoint
from components.train.config import RecapConfig
from components.train.constants import TENSORBOARD_SUBDIR
from components.train.distributed import DistEnv

log = logging.getLogger(__name__)


class TensorBoard:
    """Scalars on rank 0 (a no-op elsewhere or with training.tensorboard: false)."""

    def __init__(self, config: RecapConfig, env: DistEnv) -> None:
        self.writer = None
        self.remote = None
        self.uploaded: dict[Path, int] = {}  # local event file -> size at its last upload
        if not (env.is_chief and config.training.tensorboard):
            return
        from torch.utils.tensorboard import SummaryWriter

        target = storage.join(config.training.save_dir, TENSORBOARD_SUBDIR)
        if storage.is_gcs(target):
            self.remote = target
            local = checkpoint.staging_dir(target)
        else:
            local = Path(target)
        self.local = local
        self.writer = SummaryWriter(log_dir=str(local))

    def scalars(self, prefix: str, values: dict[str, float], step: int) -> None:
        if self.writer is not None:
            for name, value in values.items():
                self.writer.add_scalar(f"{prefix}/{name}", value, step)

    def sync(self) -> None:
        """Upload event files that grew since the last sync, so a gs:// run shows curves as it trains.

        Best effort: a failed upload is logged and retried at the next sync, never fatal.
        """
        if self.writer is None or not self.remote:
            return
        self.writer.flush()
        for path in sorted(self.local.rglob("*")):
            if not path.is_file():
                continue
            size = path.stat().st_size
            if self.uploaded.get(path) != size:
                try:
                    storage.upload(path, storage.join(self.remote, str(path.relative_to(self.local))))
                except Exception as exc:
                    log.warning("could not upload %s to %s: %s", path.name, self.remote, exc)
                    return
                self.uploaded[path] = size

    def close(self) -> None:
        if self.writer is None:
            return
        self.writer.close()
        if self.remote:
            self.sync()
            shutil.rmtree(self.local, ignore_errors=True)
