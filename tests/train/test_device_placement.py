"""Every parameter and buffer on the training device after DMP wraps the model, at world size 1 and 2.

Sharding runs on the CPU, where DMP keeps the tables; the meta device stands in for the GPU
the dense part must move to (placement_worker.py says how). A world of one skips DDP, which is where torchrec moves the
dense layers, so without our own move they would stay on the CPU.
"""

from __future__ import annotations

import json

import pytest

from tests.train.conftest import REPO_ROOT, launch_ranks, tiny_config_data, write_config

pytestmark = pytest.mark.integration

WORKER = REPO_ROOT / "tests" / "train" / "placement_worker.py"


@pytest.mark.parametrize("world_size", [1, 2])
def test_every_parameter_and_buffer_is_on_the_device_after_wrapping(tmp_path, world_size):
    config = write_config(tmp_path / "tiny.yaml", tiny_config_data(str(tmp_path / "run")))
    results = launch_ranks([str(WORKER), config], nproc=world_size, timeout=180)
    for rank, result in enumerate(results):
        assert result.returncode == 0, f"rank {rank}:\n{result.stdout[-3000:]}"
        report = json.loads(result.stdout.strip().splitlines()[-1])
        devices = report["devices"]
        assert report["world_size"] == world_size
        dense = {name: d for name, d in devices.items() if ".embedding_bags." not in name}
        tables = {name: d for name, d in devices.items() if ".embedding_bags." in name}
        assert any("towers" in name for name in dense) and any("running_mean" in name for name in dense)
        assert tables and set(tables.values()) == {"cpu"}  # sharded by DMP on its own device
        assert {name: d for name, d in dense.items() if d != "meta"} == {}
