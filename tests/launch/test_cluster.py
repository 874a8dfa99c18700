"""The PyTorchJob launcher end to end against a loopback Kubernetes API whose controller behaves
as the Training Operator v1.9 does (tests/launch/training_operator.py, tests/launch/fake_k8s.py)."""

from __future__ import annotations

import pytest

from components.launch.cluster import CreateRefused, run_pytorchjob
from components.launch.spec import LaunchSpec, LaunchTimeout, TrainingFailed
from tests.launch.fake_k8s import (
    RUNS_FOREVER,
    SUCCEEDS,
    Crash,
    FakeKubernetes,
    Scenario,
    crash_loop,
)
from tests.launch.training_operator import OperatorJob

pytestmark = pytest.mark.integration

COMMAND = ["torchrun", "--nnodes=2", "--nproc_per_node=2", "-m", "components.train", "--config_path=c.yaml"]
JOBS = "/apis/kubeflow.org/v1/namespaces/kubeflow/pytorchjobs"
NAME = "recap-train-run-1"


def make_spec(**overrides) -> LaunchSpec:
    values = dict(job_name=NAME, image="registry.example/recap-train:1", num_workers=2, procs_per_worker=2,
                  gpus_per_worker=2, timeout_s=20.0, poll_interval_s=0.01, log_tail_lines=5)
    values.update(overrides)
    return LaunchSpec(**values)


def launch(fake: FakeKubernetes, tmp_path, **overrides):
    return run_pytorchjob(make_spec(**overrides), COMMAND, kubeconfig=fake.kubeconfig(tmp_path / "kubeconfig"))


def test_success_creates_waits_and_deletes(tmp_path):
    with FakeKubernetes(scenario=SUCCEEDS) as fake:
        result = launch(fake, tmp_path)
        assert result.status == "Succeeded" and result.deleted
        assert fake.calls[0] == ("POST", JOBS) and fake.calls[-1] == ("DELETE", f"{JOBS}/{NAME}")
        assert fake.jobs == {}
        replicas = fake.created[0]["spec"]["pytorchReplicaSpecs"]
        assert replicas["Master"]["replicas"] == 1 and replicas["Worker"]["replicas"] == 1
        container = replicas["Worker"]["template"]["spec"]["containers"][0]
        assert container["command"] + container["args"] == COMMAND
        assert container["resources"]["limits"]["nvidia.com/gpu"] == "2"


def test_a_failure_is_reported_with_the_pod_reason_exit_code_and_log_tail_the_operator_deleted(tmp_path):
    """The operator restarts a failing container in place (OnFailure) and, when the restarts
    reach backoffLimit, deletes every pod before it writes Failed. The report must still name
    the pod that failed first, OOMKilled, exit 137 and the log tail: captured while polling."""
    failing_at_gone = []
    with FakeKubernetes(scenario=crash_loop(pod="worker-0")) as fake:
        original = OperatorJob.set_condition

        def spy(job, kind, *args):  # what the cluster held when Failed was written
            if kind == "Failed":
                failing_at_gone.append(dict(job.pods))
            original(job, kind, *args)

        OperatorJob.set_condition = spy
        try:
            with pytest.raises(TrainingFailed) as info:
                launch(fake, tmp_path, backoff_limit=2)
        finally:
            OperatorJob.set_condition = original
    assert failing_at_gone == [{}], "the operator deletes the pods before it writes Failed"
    message = str(info.value)
    assert "reached the specified backoff limit" in message
    first = next(line for line in message.splitlines() if line.startswith("first failure:"))
    assert f"pod {NAME}-worker-0" in first and "OOMKilled exit 137" in first
    tail = message.split(f"log tail of {NAME}-worker-0 (OOMKilled exit 137):", 1)[1]
    assert "torch.OutOfMemoryError: CUDA out of memory" in tail.split("log tail of", 1)[0]
    assert f"pod {NAME}-master-0: pytorch terminated Error exit 1" in message  # the c10d peer that followed
    assert "pods now: none" in message
    assert info.value.exit_code == 1
    assert ("GET", f"/api/v1/namespaces/kubeflow/pods/{NAME}-worker-0/log") in fake.calls


def test_backoff_limit_counts_whole_job_restarts_so_one_fault_does_not_end_a_4_node_job(tmp_path):
    """The operator sums container restarts over all pods, and one fault in a c10d job restarts
    every node: with backoffLimit 3 a 4-node job would die at its first transient fault."""
    one_fault = Scenario(run_ticks=3, crashes=(Crash(at=4, pod="worker-1", reason="Error", exit_code=1,
                                                     log="RuntimeError: NCCL timeout"),))
    with FakeKubernetes(scenario=one_fault) as fake:
        result = launch(fake, tmp_path, num_workers=4, backoff_limit=3, cleanup="never")
        assert result.status == "Succeeded"
        job = fake.job(NAME)
        assert job.job["spec"]["runPolicy"]["backoffLimit"] == 12
        assert sum(p.restart_count for p in job.pods.values()) == 4  # one fault, four restarts
    # the negative control: backoffLimit 4 (not 3 x 4) for 4 nodes ends the job at that one fault
    with FakeKubernetes(scenario=one_fault) as fake, pytest.raises(TrainingFailed, match="backoff limit"):
        run_pytorchjob(make_spec(num_workers=4, backoff_limit=1), COMMAND, kubeconfig=fake.kubeconfig(tmp_path / "kc"))


def test_active_deadline_ends_a_job_and_the_report_says_so(tmp_path):
    with FakeKubernetes(scenario=RUNS_FOREVER) as fake:
        with pytest.raises(TrainingFailed) as info:
            launch(fake, tmp_path, active_deadline_seconds=5)
        assert "active longer than specified deadline" in str(info.value)
        assert fake.jobs == {}  # then deleted by us (cleanup=always)


def test_ttl_after_finished_deletes_a_kept_job(tmp_path):
    with FakeKubernetes(scenario=SUCCEEDS) as fake:
        launch(fake, tmp_path, cleanup="never", ttl_seconds_after_finished=2)
        fake.tick()  # the next reconcile of a finished job cleans up its pods (cleanPodPolicy All)
        assert fake.job(NAME) is not None and fake.job(NAME).pods == {}
        fake.tick(2)
        assert fake.job(NAME) is None  # 2 s after completion


def test_a_job_deleted_under_us_is_reported_with_what_its_pods_went_through(tmp_path):
    """Someone (or a short ttlSecondsAfterFinished) deletes the job while we poll: a 404."""

    class DeletedAtTick5(FakeKubernetes):
        def _reconcile(self, key):
            super()._reconcile(key)
            if key in self.jobs and self.jobs[key].ticks >= 5:
                del self.jobs[key]

    crash = Scenario(run_ticks=None, crashes=(Crash(at=3),))
    with DeletedAtTick5(scenario=crash) as fake, pytest.raises(TrainingFailed) as info:
        launch(fake, tmp_path)
    assert "deleted while we waited" in str(info.value)
    assert f"first failure: pod {NAME}-worker-0: pytorch terminated OOMKilled exit 137" in str(info.value)


def test_cleanup_on_success_keeps_a_failed_job_for_debugging(tmp_path):
    with FakeKubernetes(scenario=crash_loop()) as fake:
        with pytest.raises(TrainingFailed):
            launch(fake, tmp_path, cleanup="on_success", backoff_limit=1)
        assert not any(method == "DELETE" for method, _ in fake.calls)
        assert list(fake.jobs) == [("kubeflow", NAME)]


def test_our_timeout_is_honoured_explained_and_the_job_deleted(tmp_path):
    with FakeKubernetes(scenario=RUNS_FOREVER) as fake:
        with pytest.raises(LaunchTimeout) as info:
            launch(fake, tmp_path, timeout_s=0.5)
        assert "not finished after 0.5s" in str(info.value)
        assert f"pod {NAME}-master-0 now: Running (pytorch running" in str(info.value)
        assert fake.calls[-1] == ("DELETE", f"{JOBS}/{NAME}") and fake.jobs == {}


def test_a_job_that_cannot_be_scheduled_says_why_at_our_timeout(tmp_path):
    waiting = Scenario(pending_ticks=10_000, unschedulable="0/3 nodes are available: 3 Insufficient nvidia.com/gpu.")
    with FakeKubernetes(scenario=waiting) as fake, pytest.raises(LaunchTimeout) as info:
        launch(fake, tmp_path, timeout_s=0.3)
    assert "PodScheduled=False: 0/3 nodes are available: 3 Insufficient nvidia.com/gpu." in str(info.value)


def test_leftover_finished_job_of_the_same_run_is_replaced(tmp_path):
    with FakeKubernetes(scenario=SUCCEEDS) as fake:
        launch(fake, tmp_path, cleanup="never")
        fake.calls.clear()
        assert launch(fake, tmp_path).status == "Succeeded"
        assert len([c for c in fake.calls if c[0] == "POST"]) == 2  # 409, then created again
        assert fake.jobs == {}


def test_create_refused_fails_clearly_and_deletes_nothing(tmp_path):
    with FakeKubernetes(create_status=403) as fake:
        with pytest.raises(CreateRefused, match="create failed"):
            launch(fake, tmp_path)
        assert [m for m, _ in fake.calls] == ["POST"]


def test_a_webhook_denial_reaches_the_user_word_for_word(tmp_path):
    """The operator's validating webhook refuses what the schema allows (here a job name that is
    not a DNS-1035 label); the API server returns its message, and the step must show it."""
    with FakeKubernetes() as fake:
        with pytest.raises(CreateRefused) as info:
            launch(fake, tmp_path, job_name="Recap_Train_1")
        assert 'admission webhook "validator.pytorchjob.training-operator.kubeflow.org" denied the request: ' \
               "metadata.name: Invalid value: 'Recap_Train_1'" in str(info.value)
        assert "HTTP response headers" not in str(info.value)  # the message, not the client's dump
        assert fake.jobs == {} and [m for m, _ in fake.calls] == ["POST"]
