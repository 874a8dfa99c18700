"""The PyTorchJob launcher end to end against a loopback Kubernetes API (tests/launch/fake_k8s.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from components.launch.cluster import run_pytorchjob
from components.launch.spec import LaunchCancelled, LaunchSpec, LaunchTimeout, TrainingFailed
from tests.launch.fake_k8s import (
    FAILURE_SCRIPT,
    STALL_SCRIPT,
    SUCCESS_SCRIPT,
    FakeKubernetes,
    exercise_launcher,
)

pytestmark = pytest.mark.integration

COMMAND = ["torchrun", "--nnodes=2", "--nproc_per_node=2", "-m", "components.train", "--config_path=c.yaml"]
JOBS = "/apis/kubeflow.org/v1/namespaces/kubeflow/pytorchjobs"
LAUNCHER_RULES = {
    ("kubeflow.org", "pytorchjobs", "create"),
    ("kubeflow.org", "pytorchjobs", "get"),
    ("kubeflow.org", "pytorchjobs", "delete"),
    ("", "pods", "list"),
    ("", "pods/log", "get"),
}


def make_spec(**overrides) -> LaunchSpec:
    values = dict(job_name="recap-train-run-1", image="registry.example/recap-train:1", num_workers=2,
                  procs_per_worker=2, gpus_per_worker=2, timeout_s=20.0, poll_interval_s=0.02)
    values.update(overrides)
    return LaunchSpec(**values)


@pytest.fixture
def fake(request):
    script = getattr(request, "param", SUCCESS_SCRIPT)
    with FakeKubernetes(script=script) as server:
        yield server


def test_success_creates_waits_and_deletes(fake, tmp_path):
    result = run_pytorchjob(make_spec(), COMMAND, kubeconfig=fake.kubeconfig(tmp_path / "kubeconfig"))
    assert result.status == "Succeeded" and result.deleted
    name = f"{JOBS}/recap-train-run-1"
    assert fake.calls[0] == ("POST", JOBS)
    assert fake.calls[-1] == ("DELETE", name)
    assert [c for c in fake.calls if c == ("GET", name)] == [("GET", name)] * len(SUCCESS_SCRIPT)
    assert fake.jobs == {}
    body = fake.created[0]
    replicas = body["spec"]["pytorchReplicaSpecs"]
    assert replicas["Master"]["replicas"] == 1 and replicas["Worker"]["replicas"] == 1
    container = replicas["Worker"]["template"]["spec"]["containers"][0]
    assert container["command"] + container["args"] == COMMAND
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "2"
    assert replicas["Master"]["template"]["metadata"]["annotations"]["sidecar.istio.io/inject"] == "false"
    policy = body["spec"]["runPolicy"]
    assert policy["ttlSecondsAfterFinished"] == 3600 and policy["cleanPodPolicy"] == "All"
    assert policy["backoffLimit"] == 3


@pytest.mark.parametrize("fake", [FAILURE_SCRIPT], indirect=True)
def test_failed_job_fails_with_reason_and_logs_then_is_deleted(fake, tmp_path):
    with pytest.raises(TrainingFailed) as info:
        run_pytorchjob(make_spec(), COMMAND, kubeconfig=fake.kubeconfig(tmp_path / "kubeconfig"))
    message = str(info.value)
    assert "Failed" in message and "1 Master replica(s) failed" in message
    assert "OOMKilled exit 137" in message
    assert "CUDA out of memory" in message  # the master's log tail
    assert "recap-train-run-1-worker-0" in message
    assert info.value.exit_code == 1
    assert ("DELETE", f"{JOBS}/recap-train-run-1") in fake.calls and fake.jobs == {}
    assert ("GET", "/api/v1/namespaces/kubeflow/pods/recap-train-run-1-master-0/log") in fake.calls


@pytest.mark.parametrize("fake", [FAILURE_SCRIPT], indirect=True)
def test_cleanup_on_success_keeps_a_failed_job_for_debugging(fake, tmp_path):
    with pytest.raises(TrainingFailed):
        run_pytorchjob(make_spec(cleanup="on_success"), COMMAND, kubeconfig=fake.kubeconfig(tmp_path / "kc"))
    assert not any(method == "DELETE" for method, _ in fake.calls)
    assert list(fake.jobs) == [("kubeflow", "recap-train-run-1")]


@pytest.mark.parametrize("fake", [STALL_SCRIPT], indirect=True)
def test_our_timeout_is_honoured_and_the_job_deleted(fake, tmp_path):
    start = time.monotonic()
    with pytest.raises(LaunchTimeout) as info:
        run_pytorchjob(make_spec(timeout_s=0.6), COMMAND, kubeconfig=fake.kubeconfig(tmp_path / "kc"))
    assert time.monotonic() - start < 10  # not the SDK's 600 s default, not its 120 s request timeout
    assert "not finished after 0.6s" in str(info.value)
    assert "pod recap-train-run-1-master-0: Running" in str(info.value)
    assert fake.calls[-1] == ("DELETE", f"{JOBS}/recap-train-run-1") and fake.jobs == {}


def test_leftover_finished_job_of_the_same_run_is_replaced(fake, tmp_path):
    kubeconfig = fake.kubeconfig(tmp_path / "kc")
    run_pytorchjob(make_spec(cleanup="never"), COMMAND, kubeconfig=kubeconfig)
    fake.calls.clear()
    result = run_pytorchjob(make_spec(), COMMAND, kubeconfig=kubeconfig)
    assert result.status == "Succeeded"
    posts = [c for c in fake.calls if c[0] == "POST"]
    assert len(posts) == 2  # 409, then created again after the old one was deleted
    assert fake.jobs == {}


def test_create_refused_fails_clearly_and_deletes_nothing(tmp_path):
    with FakeKubernetes(create_status=403) as fake:
        with pytest.raises(TrainingFailed, match="create failed"):
            run_pytorchjob(make_spec(), COMMAND, kubeconfig=fake.kubeconfig(tmp_path / "kc"))
        assert [m for m, _ in fake.calls] == ["POST"]


@pytest.mark.parametrize("fake", [STALL_SCRIPT], indirect=True)
def test_sigterm_cancels_and_deletes_the_job(fake, tmp_path):
    kubeconfig = fake.kubeconfig(tmp_path / "kc")
    script = textwrap.dedent(f"""
        import logging, sys
        logging.basicConfig(level=logging.INFO)
        from components.launch.cluster import run_pytorchjob
        from components.launch.spec import LaunchSpec, LaunchCancelled
        spec = LaunchSpec(job_name="recap-train-run-1", image="i", timeout_s=60, poll_interval_s=0.05)
        try:
            run_pytorchjob(spec, {COMMAND!r}, kubeconfig={kubeconfig!r})
        except LaunchCancelled as exc:
            print("CANCELLED", exc, flush=True)
            sys.exit(exc.exit_code)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, cwd=Path(__file__).resolve().parents[2])
    deadline = time.monotonic() + 30
    while sum(1 for c in fake.calls if c[0] == "GET") < 3:
        assert time.monotonic() < deadline and proc.poll() is None, proc.stdout.read() if proc.poll() else "timeout"
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGTERM)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == LaunchCancelled.exit_code, out
    assert "CANCELLED" in out and "SIGTERM" in out
    assert fake.calls[-1] == ("DELETE", f"{JOBS}/recap-train-run-1") and fake.jobs == {}


def test_recorded_calls_are_exactly_the_rbac_the_launcher_needs(tmp_path):
    assert exercise_launcher(tmp_path) == LAUNCHER_RULES
