"""The local backend: torchrun agents as processes, one per simulated node."""

from __future__ import annotations

import sys
import textwrap
import time

import pytest

from components.launch.local import free_port, run_torchrun
from components.launch.spec import LaunchSpec, LaunchTimeout, TrainingFailed

pytestmark = pytest.mark.integration


def spec(**overrides) -> LaunchSpec:
    return LaunchSpec(**{"job_name": "recap-train-local", "image": "", "timeout_s": 120.0, **overrides})


def test_two_local_nodes_form_one_process_group(tmp_path):
    script = tmp_path / "allreduce.py"
    script.write_text(textwrap.dedent(f"""
        import os, torch, torch.distributed as dist
        dist.init_process_group("gloo")
        t = torch.tensor([dist.get_rank() + 1.0])
        dist.all_reduce(t)
        if dist.get_rank() == 0:
            open({str(tmp_path / "out.txt")!r}, "w").write(f"{{dist.get_world_size()}} {{t.item()}}")
        dist.destroy_process_group()
    """))
    command = [sys.executable, "-m", "torch.distributed.run", "--nnodes=2", "--nproc_per_node=1",
               "--rdzv_backend=c10d", f"--rdzv_endpoint=127.0.0.1:{free_port()}", "--rdzv_id=t", str(script)]
    result = run_torchrun(spec(num_workers=2), command)
    assert result.status == "Succeeded" and result.backend == "local"
    assert (tmp_path / "out.txt").read_text() == "2 3.0"  # world of 2 nodes; 1 + 2 summed


def test_a_failing_node_fails_the_launch_with_its_output():
    command = [sys.executable, "-c", "import sys; print('loss is nan at step 3', flush=True); sys.exit(3)"]
    with pytest.raises(TrainingFailed) as info:
        run_torchrun(spec(), command)
    assert "exit codes [3]" in str(info.value) and "loss is nan at step 3" in str(info.value)


def test_timeout_stops_the_processes():
    start = time.monotonic()
    with pytest.raises(LaunchTimeout, match="not finished after"):
        run_torchrun(spec(timeout_s=1.0), [sys.executable, "-c", "import time; time.sleep(60)"])
    assert time.monotonic() - start < 15
