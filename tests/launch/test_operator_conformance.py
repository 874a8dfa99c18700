"""The PyTorchJob bodies the launcher builds, checked against what the Training Operator v1.9
does with them: its CRD schema (strictly: nothing the API server would prune), its validating
webhook, the env it gives each pod, and how it counts elastic replicas.

Variants: what the pipeline creates by default (1 node, CPU), a multi-node GPU job, one with a
mounted key Secret and the emulator env, an elastic job, and one owned by the launcher's pod.
"""

from __future__ import annotations

import copy
import re

import pytest

from components.launch.command import trainer_command
from components.launch.pytorchjob import build_pytorchjob, to_manifest
from components.launch.spec import ElasticSpec, LaunchSpec, PodRef, TrainerArgs
from tests.launch.crd_schema import schema_errors
from tests.launch.training_operator import pod_env, webhook_errors, with_defaults

ARGS = TrainerArgs(config_path="configs/prod.yaml", train_data="gs://b/tf/train", validation_data="gs://b/tf/eval",
                   save_dir="gs://b/ckpt", model_dir="gs://b/model")
VARIANTS = {
    "default": LaunchSpec(job_name="recap-train-run-1", image="ghcr.io/recap-pipeline/recap-train:0.1.0",
                          service_account="recap-trainer"),
    "multi-node-gpu": LaunchSpec(job_name="recap-train-run-2", image="r/recap-train:1", num_workers=4,
                                 procs_per_worker=8, gpus_per_worker=8, cpu="32", memory="200Gi"),
    "secret-mounted": LaunchSpec(job_name="recap-train-run-3", image="r/recap-train:1", num_workers=2,
                                 gcs_secret="recap-gcs-key", env=(("STORAGE_EMULATOR_HOST", "http://gcs:4443"),)),
    "elastic": LaunchSpec(job_name="recap-train-run-4", image="r/recap-train:1", num_workers=3, procs_per_worker=2,
                          gpus_per_worker=2, elastic=ElasticSpec(min_replicas=2, max_replicas=4)),
    "owned": LaunchSpec(job_name="recap-train-run-5", image="r/recap-train:1", num_workers=2,
                        owner=PodRef("recap-heavy-ranker-x-system-container-impl-1", "5c0f6b8e")),
}
ENV_REFERENCE = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


def body(name: str) -> dict:
    spec = VARIANTS[name]
    return to_manifest(build_pytorchjob(spec, trainer_command(spec, ARGS, "kubernetes")))


@pytest.mark.parametrize("variant", VARIANTS)
def test_body_validates_strictly_against_the_pytorchjob_crd_schema(variant):
    assert schema_errors(body(variant)) == []


@pytest.mark.parametrize(("where", "change", "expected"), [
    ("a field the server prunes", lambda b: b["spec"]["runPolicy"].update(backoffLimits=3), "backoffLimits"),
    ("pruned from a pod template's metadata", lambda b: b["spec"]["pytorchReplicaSpecs"]["Master"]["template"]
     ["metadata"].update(generateName="x-"), "generateName"),
    ("a misspelt container field", lambda b: b["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]
     ["containers"][0].update(volumeMount=[]), "volumeMount"),
    ("a number as a string", lambda b: b["spec"]["pytorchReplicaSpecs"]["Master"].update(replicas="1"),
     "'1' is not of type 'integer'"),
    ("no replica specs", lambda b: b["spec"].pop("pytorchReplicaSpecs"), "'pytorchReplicaSpecs' is a required"),
])
def test_the_schema_check_bites(where, change, expected):
    broken = copy.deepcopy(body("default"))
    change(broken)
    errors = schema_errors(broken)
    assert any(expected in e for e in errors), f"{where}: {errors}"


@pytest.mark.parametrize("variant", VARIANTS)
def test_the_operators_webhook_admits_every_body(variant):
    assert webhook_errors(body(variant)) == []


def test_the_webhook_refuses_nproc_per_node_twice_and_an_elastic_job_without_workers():
    """The negative control: what the launcher used to send for elastic jobs is denied."""
    both = body("elastic")
    both["spec"]["elasticPolicy"]["nProcPerNode"] = 2
    assert webhook_errors(both) == ["spec.elasticPolicy.nProcPerNode: Forbidden: must not be used with spec.nprocPerNode"]
    master_only = body("default")
    master_only["spec"]["elasticPolicy"] = {"minReplicas": 1, "maxReplicas": 1}
    assert any("must be configured if elastic policy is used" in e for e in webhook_errors(master_only))


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_env_reference_in_the_command_is_set_by_the_operator(variant):
    """Kubernetes expands `$(VAR)` in command/args from the container's env, which the operator
    fills; an unset variable stays literal and torchrun would dial `$(MASTER_ADDR)`."""
    job = with_defaults(body(variant))
    for kind, replica in job["spec"]["pytorchReplicaSpecs"].items():
        (container,) = replica["template"]["spec"]["containers"]
        for index in range(replica["replicas"]):
            env = {e["name"] for e in container.get("env", [])} | set(pod_env(job, kind, index))
            referenced = set(ENV_REFERENCE.findall(" ".join(container["command"] + container["args"])))
            assert referenced <= env, f"{variant} {kind}-{index}: {sorted(referenced - env)} unset"


def test_elastic_replicas_are_workers_and_torchrun_agrees_with_the_operator():
    """The operator counts elasticPolicy.minReplicas/maxReplicas over Worker replicas and gives
    every pod PET_NNODES=min:max and the rendezvous at worker 0."""
    job = with_defaults(body("elastic"))
    elastic, replicas = job["spec"]["elasticPolicy"], job["spec"]["pytorchReplicaSpecs"]
    assert set(replicas) == {"Worker"}
    assert elastic["minReplicas"] <= replicas["Worker"]["replicas"] <= elastic["maxReplicas"]
    (container,) = replicas["Worker"]["template"]["spec"]["containers"]
    env = pod_env(job, "Worker", 1)
    assert f"--nnodes={env['PET_NNODES']}" in container["args"] and env["PET_NNODES"] == "2:4"
    assert env["PET_RDZV_ENDPOINT"] == "recap-train-run-4-worker-0:23456"
    assert "nProcPerNode" not in elastic and job["spec"]["nprocPerNode"] == "2"
    assert env["PET_NPROC_PER_NODE"] == "2" and "--nproc_per_node=2" in container["args"]


def test_fixed_size_jobs_agree_with_the_operators_node_count_and_ranks():
    job = with_defaults(body("multi-node-gpu"))
    (container,) = job["spec"]["pytorchReplicaSpecs"]["Worker"]["template"]["spec"]["containers"]
    env = pod_env(job, "Worker", 2)
    assert env["PET_NNODES"] == "4" and "--nnodes=4" in container["args"]
    assert env["RANK"] == "3" and env["WORLD_SIZE"] == "32" and env["MASTER_ADDR"] == "recap-train-run-2-master-0"
