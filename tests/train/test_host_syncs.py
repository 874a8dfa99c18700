"""No host sync in the steady-state training step: losses and the every-rank data check are batched.

Two ranks (gloo) train the tiny model for 20 steps with losses logged every 5 steps and the data
checked every 4 (sync_count_worker.py counts the syncing calls our code makes in each step). On a
GPU each such call stops the host from queueing the next step's work while the device runs.
"""

from __future__ import annotations

import json

import pytest

from tests.train.conftest import REPO_ROOT, launch_ranks, tiny_config_data, write_config

pytestmark = pytest.mark.integration

WORKER = REPO_ROOT / "tests" / "train" / "sync_count_worker.py"
STEPS, LOG_EVERY, CHECK_EVERY = 20, 5, 4


def test_steady_state_steps_make_no_host_sync(tmp_path):
    data = tiny_config_data(str(tmp_path / "run"), steps=STEPS, train_log_every_n=LOG_EVERY,
                            data_check_every_n=CHECK_EVERY, checkpoint_every_n=100, num_eval_steps=0)
    data["model"]["sync_batch_norm"] = False  # a global batch norm's collectives are a model choice
    config = write_config(tmp_path / "tiny.yaml", data)
    out = tmp_path / "syncs.json"
    results = launch_ranks([str(WORKER), config, str(out)], nproc=2, timeout=240)
    for rank, result in enumerate(results):
        assert result.returncode == 0, f"rank {rank}:\n{result.stdout[-3000:]}"
    per_step = json.loads(out.read_text())  # per_step[k - 1]: from step k's start to step k + 1's
    assert len(per_step) == STEPS - 1
    log_steps = {k for k in range(1, STEPS) if k % LOG_EVERY == 0}
    before_check = {k for k in range(1, STEPS) if k % CHECK_EVERY == 0}  # reads ahead for step k + 1
    steady = [k for k in range(1, STEPS) if k not in log_steps | before_check]
    assert len(steady) >= 10
    assert {k: per_step[k - 1] for k in steady if per_step[k - 1]} == {}
    for k in before_check - log_steps:  # one all_reduce and reading its result, for 4 steps
        assert per_step[k - 1] == {"dist.all_reduce": 1, "Tensor.tolist": 1}, (k, per_step[k - 1])
    for k in log_steps - before_check:  # the losses: one all_reduce and one copy to the host
        assert per_step[k - 1].get("dist.all_reduce") == 1 and per_step[k - 1].get("Tensor.cpu") == 1, per_step[k - 1]
