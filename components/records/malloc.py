"""Undo TensorFlow's malloc patch: keep large freed blocks for reuse instead of unmapping them.

TensorFlow's generator dataset (our shard groups come through one) sets glibc's trim
threshold to 128 KB when it starts. That also freezes the mmap threshold at its 128 KB
default, so every batch-sized tensor (megabytes: the batched records, their decoded
copy, each feature) is a fresh mmap that page-faults in and is unmapped on free: on the
packed layout that is about half the reader's CPU. After the reader's first batch the
same settings as the trainer's (mmap threshold 256 MB, trim threshold 1 GB) are put back;
the same blocks come back every batch, so the peak RSS does not grow.

The trainer applies the same settings at start on CPU: glibc serves blocks over 32 MB with a
fresh mmap, so every step would page-fault in anew the gradients of the biggest weights (the
prod MLP's 4096x2048 is 33.5 MB in fp32: 11-18k faults and 5-10 ms a step). Settings the user
made (MALLOC_*_THRESHOLD_ variables, GLIBC_TUNABLES) win; other C libraries are left alone.
"""

from __future__ import annotations

import ctypes
import os
import platform

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


def reuse_large_allocations() -> bool:
    """mmap threshold 256 MB, trim threshold 1 GB on glibc unless the user chose; True if applied."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    user_set = any(k.startswith("MALLOC_") and k.endswith("_THRESHOLD_") for k in os.environ)
    if user_set or "GLIBC_TUNABLES" in os.environ:
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    return bool(libc.mallopt(_M_MMAP_THRESHOLD, 256 << 20) and libc.mallopt(_M_TRIM_THRESHOLD, 1 << 30))
