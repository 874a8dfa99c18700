"""One logging format for every step, and machine-readable throughput lines."""

from __future__ import annotations

import logging
import os
import sys
import time

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def setup_logging(level: str | int | None = None) -> None:
    """Configure the root logger once; RECAP_LOG_LEVEL overrides the default INFO.

    Below DEBUG, TensorFlow's own C++ warnings are silenced (unless TF_CPP_MIN_LOG_LEVEL is set):
    a reader error raised inside tf.data is otherwise printed by TensorFlow with its traceback
    before our one-line error. Takes effect in a process that has not imported TensorFlow yet.
    """
    level = level or os.environ.get("RECAP_LOG_LEVEL", "INFO")
    if str(level).upper() != "DEBUG" and level != logging.DEBUG:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    root = logging.getLogger()
    if not any(getattr(h, "_recap", False) for h in root.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
        handler._recap = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    root.setLevel(level)


def format_metrics(**values: float | int | str) -> str:
    """`key=value` pairs, floats with one decimal when large: easy to grep and to parse."""
    parts = []
    for key, value in values.items():
        if isinstance(value, float):
            value = f"{value:.1f}" if abs(value) >= 100 else f"{value:.4g}"
        parts.append(f"{key}={value}")
    return " ".join(parts)


class Throughput:
    """Counts units (rows, examples, bytes) and reports rates since start."""

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.count = 0
        self.bytes = 0

    def add(self, count: int, nbytes: int = 0) -> None:
        self.count += count
        self.bytes += nbytes

    @property
    def seconds(self) -> float:
        return max(time.perf_counter() - self.start, 1e-9)

    @property
    def per_second(self) -> float:
        return self.count / self.seconds

    @property
    def mb_per_second(self) -> float:
        return self.bytes / 1e6 / self.seconds
