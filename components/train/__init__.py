"""Training: config, loop, loss, optimizer, precision, sharding, checkpoints, export.

`run(train_uri, validation_uri, out_uri, config) -> TrainResult` is the step (trainer.py), run on
every rank under torchrun; `python -m components.train` and `recap train` wrap it. Imported
lazily so the config can be read without loading torch.
"""

from __future__ import annotations

from typing import Any

__all__ = ["TrainResult", "run"]


def __getattr__(name: str) -> Any:
    if name == "run":
        from components.train.trainer import run

        return run
    if name == "TrainResult":
        from components.train.loop import TrainResult

        return TrainResult
    raise AttributeError(name)
