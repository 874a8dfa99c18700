"""The local backend: torchrun agents as processes, one per simulated node."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

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


def test_sigterm_stops_the_local_processes(tmp_path):
    marker = tmp_path / "child.pid"
    script = textwrap.dedent(f"""
        import sys
        from components.launch.local import run_torchrun
        from components.launch.spec import LaunchSpec, LaunchCancelled
        child = [sys.executable, "-c", "import os, time; open({str(marker)!r}, 'w').write(str(os.getpid())); time.sleep(60)"]
        try:
            run_torchrun(LaunchSpec(job_name="j", image="", timeout_s=60), child)
        except LaunchCancelled as exc:
            print("CANCELLED", exc, flush=True)
            sys.exit(exc.exit_code)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            cwd=Path(__file__).resolve().parents[2])
    deadline = time.monotonic() + 30
    while not marker.exists() or not marker.read_text():
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.05)
    child_pid = int(marker.read_text())
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 1 and "CANCELLED" in out, out
    with pytest.raises(ProcessLookupError):
        os.kill(child_pid, 0)  # the training process is gone too
