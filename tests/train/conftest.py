"""Fixtures for the trainer tests: a tiny config, in-memory batches, a torchrun runner."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml

from components.common.schema import load_schema
from components.launch.local import free_port
from components.train.config import RecapConfig, load_train_config
from components.train.synthetic import global_batch

REPO_ROOT = Path(__file__).resolve().parents[2]
WORKER = REPO_ROOT / "tests" / "train" / "dist_worker.py"


def tiny_config_data(save_dir: str, steps: int = 20, **training: object) -> dict:
    """A model small enough to train in seconds: 2 MaskBlocks, 1-layer towers, 2 ID tables."""
    return {
        "training": {"save_dir": save_dir, "num_train_steps": steps, "checkpoint_every_n": 10,
                     "train_log_every_n": 5, "eval_every_n": 10, "num_eval_steps": 2,
                     "num_threads": 1, "tensorboard": False, **training},
        "model": {
            "featurization": {"layer_norm_epsilon": 1e-5},
            "backbone": {"mask_net": {"mask_blocks": [{"aggregation_size": 16, "output_size": 8}] * 2,
                                      "mlp": {"layer_sizes": [16], "final_layer_activation": True}}},
            "tower": {"layer_sizes": [8, 1], "batch_norm": {"affine": False, "momentum": 0.1}},
            "sparse": {"tables": [{"feature": "meta__user_id", "num_embeddings": 128, "embedding_dim": 4},
                                  {"feature": "meta__author_id", "num_embeddings": 64, "embedding_dim": 4}]},
        },
        "train_data": {"inputs": "unused", "global_batch_size": 32},
        "optimizer": {"multi_task_learning_rates": {
            "backbone_learning_rate": {"constant": {"learning_rate": 0.003}},
            "default_tower_learning_rate": {"constant": {"learning_rate": 0.003}}}},
    }


def write_config(path: Path, data: dict) -> str:
    path.write_text(yaml.safe_dump(data))
    return str(path)


@pytest.fixture
def schema():
    return load_schema("local")


@pytest.fixture
def tiny_config(tmp_path) -> RecapConfig:
    return load_train_config(write_config(tmp_path / "tiny.yaml", tiny_config_data(str(tmp_path / "run"))))


@pytest.fixture
def batch(schema):
    return global_batch(schema, 32, index=0, seed=0)


def torchrun(args: list[str], nproc: int, max_restarts: int = 0, timeout: float = 120,
             **popen) -> subprocess.Popen | subprocess.CompletedProcess:
    """Run `torchrun --standalone` with the venv's python; Popen when `popen` is given."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
               f"--max-restarts={max_restarts}", *args]
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}
    if popen:
        return subprocess.Popen(command, cwd=REPO_ROOT, env=env, **popen)
    return subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def launch_ranks(args: list[str], nproc: int, timeout: float = 120) -> list[subprocess.CompletedProcess]:
    """Start `nproc` ranks as plain processes (no torchrun agent to stop the others when one
    exits), so that each rank's own exit code and output can be checked; ranks still running
    at the deadline are killed and reported with returncode None."""
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1", "TF_CPP_MIN_LOG_LEVEL": "2",
           "WORLD_SIZE": str(nproc), "LOCAL_WORLD_SIZE": str(nproc), "MASTER_ADDR": "127.0.0.1",
           "MASTER_PORT": str(port)}
    with contextlib.ExitStack() as stack:
        outputs = [stack.enter_context(tempfile.TemporaryFile("w+")) for _ in range(nproc)]
        procs = [subprocess.Popen([sys.executable, *args], cwd=REPO_ROOT, stdout=out, stderr=subprocess.STDOUT,
                                  env={**env, "RANK": str(rank), "LOCAL_RANK": str(rank)}, text=True)
                 for rank, out in enumerate(outputs)]
        deadline = time.monotonic() + timeout
        results = []
        for proc, out in zip(procs, outputs, strict=True):
            try:
                code = proc.wait(timeout=max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                code = None
            out.seek(0)
            results.append(subprocess.CompletedProcess(proc.args, code, out.read(), ""))
    return results
