"""The trainer under torchrun: exact sharding across world sizes, and surviving a killed rank."""

from __future__ import annotations

import json
import signal
import subprocess
import time

import psutil
import pytest

from components.train import checkpoint
from tests.train.conftest import WORKER, tiny_config_data, torchrun, write_config

pytestmark = pytest.mark.integration


def run_worker(tmp_path, name: str, nproc: int, data: dict) -> dict:
    config = write_config(tmp_path / f"{name}.yaml", data)
    result = tmp_path / f"{name}.json"
    done = torchrun([str(WORKER), f"--config_path={config}", f"--result={result}"], nproc=nproc)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(result.read_text())


def test_one_and_two_ranks_give_the_same_losses(tmp_path):
    """Same global batch and seed: 2 ranks (sharded tables, data-parallel dense) == 1 rank."""
    results = {}
    for nproc in (1, 2):
        data = tiny_config_data(str(tmp_path / f"run{nproc}"), steps=15, train_log_every_n=1,
                                checkpoint_every_n=100, num_eval_steps=0)
        results[nproc] = run_worker(tmp_path, f"w{nproc}", nproc, data)
    one, two = dict(results[1]["history"]), dict(results[2]["history"])
    assert sorted(one) == list(range(1, 16))
    assert one[15] < one[1]  # it learns
    for step in one:
        assert two[step] == pytest.approx(one[step], rel=1e-4), step


def _rank_process(launcher: subprocess.Popen, rank: str) -> psutil.Process | None:
    for child in psutil.Process(launcher.pid).children(recursive=True):
        try:
            if "dist_worker.py" in " ".join(child.cmdline()) and child.environ().get("RANK") == rank:
                return child
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return None


def test_killed_rank_resumes_from_the_last_committed_checkpoint(tmp_path):
    save_dir = tmp_path / "run"
    steps = 60
    data = tiny_config_data(str(save_dir), steps=steps, checkpoint_every_n=10, train_log_every_n=5,
                            num_eval_steps=0)
    data["train_data"]["global_batch_size"] = 256
    config = write_config(tmp_path / "kill.yaml", data)
    # An interrupted write of a later step: files but no commit marker; loading it would crash.
    junk = save_dir / "step_50"
    junk.mkdir(parents=True)
    (junk / ".metadata").write_bytes(b"not a checkpoint")
    (junk / "__0_0.distcp").write_bytes(b"\x00" * 64)
    result = tmp_path / "kill.json"
    log_path = tmp_path / "kill.log"
    with open(log_path, "w") as log:
        launcher = torchrun([str(WORKER), f"--config_path={config}", f"--result={result}"], nproc=2,
                            max_restarts=1, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 90
            while not checkpoint.committed_steps(str(save_dir)):
                assert launcher.poll() is None, "finished before the first checkpoint"
                assert time.monotonic() < deadline, "no checkpoint committed in time"
                time.sleep(0.05)
            victim = _rank_process(launcher, "1")
            assert victim is not None
            victim.send_signal(signal.SIGKILL)
            killed_after = checkpoint.committed_steps(str(save_dir))
            assert launcher.wait(timeout=120) == 0, log_path.read_text()[-3000:]
        finally:
            if launcher.poll() is None:
                launcher.kill()
    output = log_path.read_text()
    final = json.loads(result.read_text())
    assert final["step"] == steps
    assert final["resumed_from"] is not None and killed_after[-1] <= final["resumed_from"] < steps
    assert f"resumed from committed checkpoint step={final['resumed_from']}" in output
    assert final["history"][-1][0] == steps
    assert checkpoint.committed_steps(str(save_dir))[-1] == steps
    export = json.loads((save_dir / "model" / "export.json").read_text())
    assert export["step"] == steps
