"""TensorFlow's thread pools sized to this rank's share of the pod's CPUs.

Left alone, TensorFlow sizes its inter-op, intra-op and tf.data pools to every core the
machine shows, in every process: 8 ranks in a pod limited to 8 CPUs would run 8 x 3 pools
of (node's cores) threads each and spend their time switching. The share is the pod's CPU
limit (cgroup v2 `cpu.max`, v1 `cpu.cfs_quota_us`), else the CPUs this process may run on,
divided by the ranks on this node (torchrun's LOCAL_WORLD_SIZE). `RECAP_TF_THREADS` overrides.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path

log = logging.getLogger(__name__)

THREADS_ENV = "RECAP_TF_THREADS"
_CGROUP = Path("/sys/fs/cgroup")


def cgroup_cpu_limit(root: Path = _CGROUP) -> float | None:
    """CPUs the container may use (quota / period), None when unlimited or unknown."""
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]  # v2: "max 100000" or "200000 100000"
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota = int((root / "cpu" / "cpu.cfs_quota_us").read_text())  # v1: -1 when unlimited
        period = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        return None if quota <= 0 or period <= 0 else quota / period
    except (OSError, ValueError):
        return None


def pod_cpus(root: Path = _CGROUP) -> float:
    available = float(len(os.sched_getaffinity(0))) if hasattr(os, "sched_getaffinity") else float(os.cpu_count() or 1)
    limit = cgroup_cpu_limit(root)
    return available if limit is None else min(available, limit)


def rank_threads(env: dict[str, str] | None = None, root: Path = _CGROUP) -> int:
    """Threads per TensorFlow pool for one rank: its share of the pod's CPUs, at least 1."""
    env = os.environ if env is None else env
    if env.get(THREADS_ENV):
        return max(1, int(env[THREADS_ENV]))
    ranks = max(1, int(env.get("LOCAL_WORLD_SIZE", "1") or 1))
    return max(1, math.floor(pod_cpus(root) / ranks))


_applied: int | None = None  # TensorFlow's process-wide pools can be sized once, before first use


def cap_tensorflow_threads(threads: int | None = None) -> int:
    """Size TensorFlow's inter-op and intra-op pools (once per process); returns the cap in force."""
    global _applied
    if _applied is not None:
        return _applied
    import tensorflow as tf

    threads = rank_threads() if threads is None else threads
    try:
        tf.config.threading.set_inter_op_parallelism_threads(threads)
        tf.config.threading.set_intra_op_parallelism_threads(threads)
    except RuntimeError:  # the runtime already started (something used TF first): keep its pools
        log.warning("TensorFlow already initialized; its thread pools stay as they are")
    _applied = threads
    log.debug("tensorflow threads=%d", threads)
    return threads


def dataset_options(threads: int):
    """tf.data options: a private pool of `threads` for this pipeline, one thread per op inside it."""
    import tensorflow as tf

    options = tf.data.Options()
    options.threading.private_threadpool_size = threads
    options.threading.max_intra_op_parallelism = 1
    return options
