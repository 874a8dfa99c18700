"""A run terminated from the KFP UI leaves no PyTorchJob running, whatever order things die in.

What the real systems do: KFP terminates a run by setting its Argo Workflow's
activeDeadlineSeconds to 0; Argo then starts no further task (the exit handler included) and
stops the running step pods: SIGTERM to the container's process group (which reaches our
launcher under KFP's launcher), SIGKILL after the grace period; pending pods are deleted. Pods
are deleted later with the Workflow. So the job must go on each of these paths:
1. SIGTERM while we wait (the usual case): our handler deletes the job;
2. SIGTERM while the create request is in flight: the job exists but we never saw the answer;
3. SIGKILL with no SIGTERM (a lost node): the job's ownerReference to the step pod makes
   Kubernetes' garbage collector delete it when that pod is deleted;
4. nobody deletes the pod either: the operator ends the job at activeDeadlineSeconds.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from components.launch.cluster import launcher_pod
from components.launch.spec import LaunchCancelled, PodRef
from tests.launch.fake_k8s import RUNS_FOREVER, FakeKubernetes

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
NAME = "recap-train-run-1"
JOBS = "/apis/kubeflow.org/v1/namespaces/kubeflow/pytorchjobs"
STEP_POD, STEP_UID = "recap-heavy-ranker-abc-system-container-impl-123", "5c0f6b8e-step-pod-uid"


def start_launcher(fake: FakeKubernetes, tmp_path: Path, active_deadline_seconds: int = 3600) -> subprocess.Popen:
    """The train step's launcher in its own process, as it runs in a KFP step pod in `kubeflow`."""
    namespace_file = tmp_path / "namespace"
    namespace_file.write_text("kubeflow\n")
    script = textwrap.dedent(f"""
        import logging, sys
        logging.basicConfig(level=logging.INFO)
        from components.launch import cluster
        from components.launch.spec import LaunchSpec, LaunchCancelled
        cluster.SERVICE_ACCOUNT_NAMESPACE_FILE = {str(namespace_file)!r}
        spec = LaunchSpec(job_name={NAME!r}, image="i", timeout_s=600, poll_interval_s=0.05,
                          active_deadline_seconds={active_deadline_seconds})
        try:
            cluster.run_pytorchjob(spec, ["torchrun", "-m", "components.train"], kubeconfig={fake.kubeconfig(tmp_path / "kc")!r})
        except LaunchCancelled as exc:
            print("CANCELLED", exc, flush=True)
            sys.exit(exc.exit_code)
    """)
    env = {**os.environ, "KFP_POD_NAME": STEP_POD, "KFP_POD_UID": STEP_UID}
    return subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, cwd=REPO, env=env)


def wait_for(condition, proc: subprocess.Popen, what: str, limit_s: float = 60.0) -> None:
    deadline = time.monotonic() + limit_s
    while not condition():
        if proc.poll() is not None:
            raise AssertionError(f"launcher exited before {what}:\n{proc.stdout.read()}")
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def running_job(fake: FakeKubernetes) -> bool:
    job = fake.job(NAME)
    return job is not None and any(c["type"] == "Running" for c in job.conditions)


def test_sigterm_while_waiting_deletes_the_job(tmp_path):
    with FakeKubernetes(scenario=RUNS_FOREVER) as fake:
        fake.add_step_pod(STEP_POD, STEP_UID)
        proc = start_launcher(fake, tmp_path)
        wait_for(lambda: running_job(fake), proc, "the job to run")
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
        assert proc.returncode == LaunchCancelled.exit_code, out
        assert "CANCELLED" in out and "SIGTERM" in out
        assert fake.calls[-1] == ("DELETE", f"{JOBS}/{NAME}") and fake.jobs == {}


def test_sigterm_while_the_create_request_is_in_flight_still_deletes_the_job(tmp_path):
    with FakeKubernetes(scenario=RUNS_FOREVER, create_latency_s=1.5) as fake:
        fake.add_step_pod(STEP_POD, STEP_UID)
        proc = start_launcher(fake, tmp_path)
        wait_for(lambda: fake.job(NAME) is not None, proc, "the create request")
        proc.send_signal(signal.SIGTERM)  # the job exists; the launcher has no answer yet
        out, _ = proc.communicate(timeout=30)
        assert proc.returncode == LaunchCancelled.exit_code, out
        assert fake.jobs == {} and ("DELETE", f"{JOBS}/{NAME}") in fake.calls


def test_sigkill_then_the_step_pod_deleted_garbage_collects_the_job(tmp_path):
    with FakeKubernetes(scenario=RUNS_FOREVER) as fake:
        fake.add_step_pod(STEP_POD, STEP_UID)
        proc = start_launcher(fake, tmp_path)
        wait_for(lambda: running_job(fake), proc, "the job to run")
        (owner,) = fake.job(NAME).body["metadata"]["ownerReferences"]
        assert owner == {"apiVersion": "v1", "kind": "Pod", "name": STEP_POD, "uid": STEP_UID}
        proc.kill()
        proc.wait(timeout=30)
        fake.tick(3)
        assert fake.job(NAME) is not None, "nobody has deleted anything yet"
        fake.delete_step_pod(STEP_UID)  # Argo/KFP delete the step pod (or the Workflow owning it)
        assert fake.jobs == {}


def test_sigkill_and_the_pod_never_deleted_the_operator_ends_the_job_at_its_deadline(tmp_path):
    with FakeKubernetes(scenario=RUNS_FOREVER) as fake:
        fake.add_step_pod(STEP_POD, STEP_UID)
        proc = start_launcher(fake, tmp_path, active_deadline_seconds=30)
        wait_for(lambda: running_job(fake), proc, "the job to run")
        proc.kill()
        proc.wait(timeout=30)
        fake.tick(40)
        job = fake.job(NAME)
        failed = [c for c in job.conditions if c["type"] == "Failed"]
        assert failed and "active longer than specified deadline" in failed[0]["message"]
        assert job.pods == {}, "no training pod keeps running"


def test_the_owner_is_the_step_pod_only_in_the_same_namespace(tmp_path, monkeypatch):
    """Kubernetes treats an owner in another namespace as absent and would delete the job at once."""
    namespace_file = tmp_path / "namespace"
    namespace_file.write_text("kubeflow")
    monkeypatch.setenv("KFP_POD_NAME", STEP_POD)
    monkeypatch.setenv("KFP_POD_UID", STEP_UID)
    assert launcher_pod("kubeflow", str(namespace_file)) == PodRef(STEP_POD, STEP_UID)
    assert launcher_pod("team-a", str(namespace_file)) is None
    assert launcher_pod("kubeflow", str(tmp_path / "not-in-a-cluster")) is None
    monkeypatch.delenv("KFP_POD_UID")
    assert launcher_pod("kubeflow", str(namespace_file)) is None


def test_an_owner_that_does_not_exist_gets_the_job_collected(tmp_path):
    """The garbage collector's rule the ownerReference relies on, shown on the fake itself."""
    from components.launch.cluster import make_client
    from components.launch.pytorchjob import build_pytorchjob
    from components.launch.spec import LaunchSpec

    with FakeKubernetes(scenario=RUNS_FOREVER) as fake:
        client = make_client("kubeflow", fake.kubeconfig(tmp_path / "kc"))
        spec = LaunchSpec(job_name=NAME, image="i", owner=PodRef("gone", "no-such-uid"))
        client.create_job(job=build_pytorchjob(spec, ["torchrun"]), namespace="kubeflow")
        assert fake.job(NAME) is not None  # created; the collector acts afterwards
        fake.tick()
        assert fake.jobs == {}
