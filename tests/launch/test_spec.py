"""Job naming, spec checks, the PyTorchJob manifest and the trainer command (pure, fast)."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from components.common.errors import ConfigError
from components.launch.command import OPERATOR_RDZV_ENDPOINT, trainer_command
from components.launch.pytorchjob import build_pytorchjob, to_manifest
from components.launch.spec import (
    MAX_JOB_NAME,
    ElasticSpec,
    LaunchSpec,
    job_name,
    parse_env,
    passthrough_env,
    scale_quantity,
)
from components.trainer_command.flags import TrainerArgs

DNS_1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
ARGS = TrainerArgs.of("gs://b/c.yaml", train_data="gs://b/tf/train", validation_data="gs://b/tf/eval",
                      save_dir="gs://b/ckpt", model_dir="gs://b/model", num_train_steps=7)


def spec(**overrides) -> LaunchSpec:
    return LaunchSpec(**{"job_name": "recap-train-abc", "image": "reg/recap-train:1", **overrides})


@given(st.text(min_size=1, max_size=200).filter(lambda s: s.strip()))
def test_job_name_is_always_a_valid_kubernetes_name(run_id):
    name = job_name(run_id)
    assert DNS_1035.match(name), name
    assert len(name) <= MAX_JOB_NAME
    assert name == job_name(run_id)  # the cleanup step derives the same name


def test_job_names_of_distinct_long_run_ids_differ():
    base = "x" * 80
    assert job_name(base + "1") != job_name(base + "2")
    assert job_name("3F2504E0-4F89-11D3-9A0C-0305E82C3301") == "recap-train-3f2504e0-4f89-11d3-9a0c-0305e82c3301"


def test_job_name_never_contains_an_unresolved_placeholder():
    assert "{" not in job_name("{{$.pipeline_job_uuid}}") and "$" not in job_name("{{$.pipeline_job_uuid}}")


@pytest.mark.parametrize("bad", [
    dict(num_workers=0), dict(procs_per_worker=-1), dict(gpus_per_worker=1, procs_per_worker=2),
    dict(gpus_per_worker=8, procs_per_worker=1),
    dict(cleanup="sometimes"), dict(clean_pod_policy="Whatever"), dict(timeout_s=0),
    dict(service_account="sa", gcs_secret="key"), dict(elastic=ElasticSpec(min_replicas=2, max_replicas=4)),
])
def test_bad_specs_fail_at_construction(bad):
    with pytest.raises(ConfigError, match="launch:"):
        spec(**bad)


def test_single_node_job_has_only_a_master_and_runs_standalone():
    command = trainer_command(spec(), ARGS, "kubernetes")
    assert command[0] == "torchrun" and "--standalone" in command
    assert "--nnodes=1" in command and "--nproc_per_node=1" in command
    assert command[command.index("-m") + 1] == "components.train"
    assert "--train_data=gs://b/tf/train" in command and "--num_train_steps=7" in command
    manifest = to_manifest(build_pytorchjob(spec(), command))
    assert list(manifest["spec"]["pytorchReplicaSpecs"]) == ["Master"]
    pod = manifest["spec"]["pytorchReplicaSpecs"]["Master"]["template"]
    assert pod["metadata"]["annotations"] == {"sidecar.istio.io/inject": "false"}
    assert "nvidia.com/gpu" not in pod["spec"]["containers"][0]["resources"]["limits"]
    assert "tolerations" not in pod["spec"]


def test_multi_node_gpu_job_uses_operator_rendezvous_and_requests_gpus():
    s = spec(num_workers=4, procs_per_worker=8, gpus_per_worker=8, memory="200Gi", cpu="32")
    command = trainer_command(s, ARGS, "kubernetes")
    assert f"--rdzv_endpoint={OPERATOR_RDZV_ENDPOINT}" in command and "--standalone" not in command
    assert "--nnodes=4" in command and "--nproc_per_node=8" in command and "--rdzv_id=recap-train-abc" in command
    manifest = to_manifest(build_pytorchjob(s, command))
    replicas = manifest["spec"]["pytorchReplicaSpecs"]
    assert replicas["Master"]["replicas"] == 1 and replicas["Worker"]["replicas"] == 3
    container = replicas["Worker"]["template"]["spec"]["containers"][0]
    assert container["resources"]["limits"] == {"cpu": "32", "memory": "200Gi", "nvidia.com/gpu": "8"}
    assert container["name"] == "pytorch" and container["image"] == "reg/recap-train:1"
    assert manifest["spec"]["nprocPerNode"] == "8"
    # 3 whole-job restarts of 4 nodes: the operator sums restarts over all pods
    assert manifest["spec"]["runPolicy"] == {"backoffLimit": 12, "cleanPodPolicy": "All", "ttlSecondsAfterFinished": 3600,
                                             "activeDeadlineSeconds": 24 * 3600 + 600}


def test_elastic_job_has_workers_only_a_node_range_and_nproc_per_node_once():
    s = spec(num_workers=2, procs_per_worker=2, elastic=ElasticSpec(min_replicas=1, max_replicas=4, max_restarts=5))
    command = trainer_command(s, ARGS, "kubernetes")
    assert "--nnodes=1:4" in command and "--max-restarts=5" in command
    assert "--rdzv_endpoint=$(PET_RDZV_ENDPOINT)" in command  # worker 0, set by the operator
    manifest = to_manifest(build_pytorchjob(s, command))
    assert manifest["spec"]["elasticPolicy"] == {"minReplicas": 1, "maxReplicas": 4, "maxRestarts": 5,
                                                 "rdzvBackend": "c10d"}
    assert manifest["spec"]["nprocPerNode"] == "2"
    assert {k: r["replicas"] for k, r in manifest["spec"]["pytorchReplicaSpecs"].items()} == {"Worker": 2}


def test_gcs_credentials_come_from_a_secret_or_workload_identity_never_inline():
    with_secret = to_manifest(build_pytorchjob(spec(gcs_secret="recap-gcs-key"), ["torchrun"]))
    pod = with_secret["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]
    assert {"name": "gcs-key", "secret": {"secretName": "recap-gcs-key"}} in pod["volumes"]
    env = {e["name"]: e["value"] for e in pod["containers"][0]["env"]}
    assert env["GOOGLE_APPLICATION_CREDENTIALS"] == "/var/secrets/google/key.json"
    with_wi = to_manifest(build_pytorchjob(spec(service_account="recap-trainer"), ["torchrun"]))
    assert with_wi["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["serviceAccountName"] == "recap-trainer"


def test_local_multi_node_command_rendezvous_on_loopback():
    command = trainer_command(spec(num_workers=2), ARGS, "local", rdzv_endpoint="127.0.0.1:29999")
    assert command[1:3] == ["-m", "torch.distributed.run"]
    assert "--rdzv_endpoint=127.0.0.1:29999" in command
    with pytest.raises(ValueError, match="rendezvous"):
        trainer_command(spec(num_workers=2), ARGS, "local")


def test_gpu_pods_run_one_process_per_gpu_with_requests_per_gpu_by_default():
    """8 GPUs with nothing else said: 8 ranks (not 1 rank and 7 idle GPUs), 80 CPUs, 512Gi, NCCL warnings."""
    s = spec(num_workers=4, gpus_per_worker=8)
    assert (s.procs_per_worker, s.cpu, s.memory) == (8, "80", "512Gi")
    command = trainer_command(s, ARGS, "kubernetes")
    assert "--nproc_per_node=8" in command
    manifest = to_manifest(build_pytorchjob(s, command))
    container = manifest["spec"]["pytorchReplicaSpecs"]["Worker"]["template"]["spec"]["containers"][0]
    assert container["resources"]["requests"] == {"cpu": "80", "memory": "512Gi", "nvidia.com/gpu": "8"}
    assert {"name": "NCCL_DEBUG", "value": "WARN"} in container["env"]
    assert manifest["spec"]["nprocPerNode"] == "8"
    one = spec(gpus_per_worker=1, env=(("NCCL_DEBUG", "INFO"),))
    assert (one.procs_per_worker, one.cpu, one.memory, one.env) == (1, "10", "64Gi", (("NCCL_DEBUG", "INFO"),))
    cpu_only = spec()
    assert (cpu_only.procs_per_worker, cpu_only.cpu, cpu_only.memory, cpu_only.env) == (1, "2", "8Gi", ())


def test_quantities_scale_in_their_unit():
    assert [scale_quantity(q, 8) for q in ("10", "64Gi", "500m", "1.5")] == ["80", "512Gi", "4000m", "12"]


def test_nccl_settings_pass_through_to_the_trainer():
    environ = {"NCCL_SOCKET_IFNAME": "eth0", "TORCH_NCCL_ASYNC_ERROR_HANDLING": "1", "HOME": "/root", "PATH": "/bin"}
    assert passthrough_env(environ) == (("NCCL_SOCKET_IFNAME", "eth0"), ("TORCH_NCCL_ASYNC_ERROR_HANDLING", "1"))
    assert parse_env("NCCL_DEBUG=INFO, NCCL_IB_DISABLE=1,") == (("NCCL_DEBUG", "INFO"), ("NCCL_IB_DISABLE", "1"))
    with pytest.raises(ConfigError, match="trainer_env: expected KEY=VALUE, got 'NCCL_DEBUG'"):
        parse_env("NCCL_DEBUG", "trainer_env")
