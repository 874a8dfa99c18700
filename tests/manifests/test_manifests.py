"""manifests/: every file parses, every kustomization builds, every patch lands on a resource,
and the hand-run PyTorchJob is one the training operator, the image and the trainer accept."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from pipeline import images
from tests.docker.build_files import DOCKER_DIR, REPO, parse_dockerfile
from tests.manifests.kustomize import (
    KustomizeError,
    ResourceId,
    apply_component,
    build,
    containers,
    kustomization_file,
    load_docs,
)

MANIFESTS = REPO / "manifests"
KUSTOMIZATIONS = sorted(p.parent for p in MANIFESTS.rglob("kustomization.yaml"))
BUILDS = [d for d in KUSTOMIZATIONS if (yaml.safe_load((d / "kustomization.yaml").read_text()) or {}).get("kind") != "Component"]
TRAIN_JOBS = [d for d in BUILDS if d.name == "train-job"]
COMPONENT = MANIFESTS / "components" / "gcs-key-secret"
THIRD_PARTY_IMAGES = ("fsouza/fake-gcs-server",)
KUBECTL = shutil.which("kubectl")


def rel(path: Path) -> str:
    return str(path.relative_to(MANIFESTS))


def replicas(job: dict) -> dict[str, dict]:
    return job["spec"]["pytorchReplicaSpecs"]


def pytorchjob(directory: Path) -> dict:
    (job,) = [d for d in build(directory) if d["kind"] == "PyTorchJob"]
    return job


# ------------------------------------------------------------------------------ structure


def test_layout_has_base_overlays_and_a_train_job():
    names = {rel(d) for d in KUSTOMIZATIONS}
    assert {"base", "train-job", "overlays/local", "overlays/gcp", "overlays/local/train-job",
            "overlays/gcp/train-job", "components/gcs-key-secret"} <= names


@pytest.mark.parametrize("path", sorted(MANIFESTS.rglob("*.y*ml")), ids=rel)
def test_every_yaml_file_parses(path):
    if path.name.startswith("kustomization."):
        spec = yaml.safe_load(path.read_text())
        assert spec["apiVersion"].startswith("kustomize.config.k8s.io/")
        assert spec["kind"] in ("Kustomization", "Component")
    else:
        assert load_docs(path)


@pytest.mark.parametrize("directory", BUILDS, ids=rel)
def test_every_kustomization_builds_and_its_patches_land(directory):
    docs = build(directory)  # raises on a missing file, an unmatched patch, a bad JSON 6902 path
    assert docs


def test_every_resource_file_is_used_by_a_kustomization():
    used = set()
    for directory in KUSTOMIZATIONS:
        spec = yaml.safe_load(kustomization_file(directory).read_text())
        used |= {(directory / entry).resolve() for entry in spec.get("resources", [])}
    files = {p.resolve() for p in MANIFESTS.rglob("*.y*ml") if not p.name.startswith("kustomization.")}
    assert files - used == set()


def test_checker_rejects_patches_that_do_not_land(tmp_path):
    """The structural check is not vacuous: a patch on a missing resource or path fails."""
    (tmp_path / "sa.yaml").write_text("apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: a}\n")
    bad_target = {"resources": ["sa.yaml"], "patches": [{"target": {"kind": "ServiceAccount", "name": "b"},
                                                         "patch": "- {op: add, path: /metadata/labels, value: {}}"}]}
    bad_path = {"resources": ["sa.yaml"], "patches": [{"target": {"kind": "ServiceAccount", "name": "a"},
                                                       "patch": "- {op: add, path: /spec/x/y, value: 1}"}]}
    missing = {"resources": ["sa.yaml", "nope.yaml"]}
    for spec in (bad_target, bad_path, missing):
        (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump(spec))
        with pytest.raises(KustomizeError):
            build(tmp_path)


def test_no_secret_values_are_committed():
    for path in MANIFESTS.rglob("*.y*ml"):
        text = path.read_text()
        assert "BEGIN PRIVATE KEY" not in text and '"private_key"' not in text, path
        if not path.name.startswith("kustomization."):
            assert all(d["kind"] != "Secret" for d in load_docs(path)), f"{path}: create Secrets with kubectl"
        else:
            assert "secretGenerator" not in text, path


# ------------------------------------------------------------------------------ credentials


def test_gcp_uses_workload_identity_on_both_service_accounts():
    base = {d["metadata"]["name"]: d for d in build(MANIFESTS / "base") if d["kind"] == "ServiceAccount"}
    gcp = {d["metadata"]["name"]: d for d in build(MANIFESTS / "overlays" / "gcp") if d["kind"] == "ServiceAccount"}
    assert set(gcp) == set(base) == {"recap-pipeline", "recap-trainer"}
    for name, account in gcp.items():
        google_sa = account["metadata"]["annotations"]["iam.gke.io/gcp-service-account"]
        assert google_sa.startswith(f"{name}@") and google_sa.endswith(".iam.gserviceaccount.com")
        assert "annotations" not in base[name]["metadata"]
    assert base["recap-trainer"]["automountServiceAccountToken"] is False  # trainers never call the API


@pytest.mark.parametrize("directory", TRAIN_JOBS, ids=rel)
def test_key_secret_component_mounts_the_key_where_the_launcher_does(directory):
    from components.launch.pytorchjob import GCS_KEY_MOUNT

    docs = build(directory)
    apply_component(docs, COMPONENT)
    (job,) = docs
    for replica in replicas(job).values():
        spec = replica["template"]["spec"]
        volume = next(v for v in spec["volumes"] if v["name"] == "gcs-key")
        container = spec["containers"][0]
        mount = next(m for m in container["volumeMounts"] if m["name"] == "gcs-key")
        assert mount["mountPath"] == GCS_KEY_MOUNT and mount["readOnly"] is True
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert env["GOOGLE_APPLICATION_CREDENTIALS"] == f"{GCS_KEY_MOUNT}/key.json"
        assert volume["secret"]["secretName"] == "recap-gcs-key"


def test_local_overlay_points_trainers_at_the_in_cluster_gcs_emulator():
    local = build(MANIFESTS / "overlays" / "local")
    config = next(d for d in local if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "recap-storage")
    service = next(d for d in local if d["kind"] == "Service" and d["metadata"]["name"] == "gcs-emulator")
    port = service["spec"]["ports"][0]["port"]
    assert config["data"]["STORAGE_EMULATOR_HOST"] == f"http://gcs-emulator:{port}"
    for replica in replicas(pytorchjob(MANIFESTS / "overlays" / "local" / "train-job")).values():
        env_from = replica["template"]["spec"]["containers"][0]["envFrom"]
        assert {"configMapRef": {"name": "recap-storage"}} in env_from


# ------------------------------------------------------------------------------ the PyTorchJob


@pytest.mark.parametrize("directory", TRAIN_JOBS, ids=rel)
def test_pytorchjob_loads_into_kubeflow_training_models_without_losing_fields(directory):
    from kubeflow.training import models
    from kubeflow.training.api_client import ApiClient

    job = pytorchjob(directory)
    client = ApiClient()

    class Response:
        data = json.dumps(job)

    model = client.deserialize(Response(), "KubeflowOrgV1PyTorchJob")
    assert isinstance(model, models.KubeflowOrgV1PyTorchJob)
    # The generated models drop unknown keys silently: a round trip shows every typo.
    assert client.sanitize_for_serialization(model) == job
    assert set(model.spec.pytorch_replica_specs) <= {"Master", "Worker"}


def _trainer_parser() -> argparse.ArgumentParser:
    from components.trainer_command.flags import add_trainer_arguments

    parser = argparse.ArgumentParser(allow_abbrev=False)
    add_trainer_arguments(parser)
    return parser


@pytest.mark.parametrize("directory", TRAIN_JOBS, ids=rel)
def test_pytorchjob_runs_torchrun_on_the_train_image_with_arguments_the_trainer_accepts(directory):
    from torch.distributed.run import get_args_parser

    from components.launch.pytorchjob import CONTAINER_NAME

    job = pytorchjob(directory)
    nodes = sum(int(r.get("replicas", 1)) for r in replicas(job).values())
    user = parse_dockerfile(DOCKER_DIR / "Dockerfile")["train"].user().split(":")[0]
    accounts = {d["metadata"]["name"] for d in build(MANIFESTS / "base") if d["kind"] == "ServiceAccount"}
    for replica_type, replica in replicas(job).items():
        spec = replica["template"]["spec"]
        (container,) = spec["containers"]
        assert container["name"] == CONTAINER_NAME, "the training operator looks for this container name"
        image = container["image"].rsplit("/", 1)[-1].split(":")[0]
        assert image == "recap-train" and image in images.IMAGES
        assert container["command"] == ["torchrun"], "overrides the image's `recap train` ENTRYPOINT"
        torchrun_parser = get_args_parser()
        torchrun_parser.allow_abbrev = False  # a misspelt flag must not pass as a prefix
        torchrun = torchrun_parser.parse_args(container["args"])
        assert torchrun.module and torchrun.training_script == "components.train"
        assert torchrun.nnodes == str(nodes), f"{replica_type}: --nnodes vs {nodes} replicas"
        assert torchrun.nproc_per_node == job["spec"]["nprocPerNode"]
        trainer = _trainer_parser().parse_args(torchrun.training_script_args)
        config = Path(trainer.config_path)
        assert config.parent == Path("/opt/recap/configs"), "configs ship in the image at RECAP_CONFIG_DIR"
        assert (REPO / "configs" / config.name).is_file(), f"{config.name} is not in configs/"
        assert spec["serviceAccountName"] in accounts
        assert str(spec["securityContext"]["runAsUser"]) == user and spec["securityContext"]["runAsNonRoot"]
        shm = next(v for v in spec["volumes"] if v["name"] == "dshm")
        assert shm["emptyDir"]["medium"] == "Memory"
        assert replica["template"]["metadata"]["annotations"]["sidecar.istio.io/inject"] == "false"


def test_gcp_train_job_runs_one_process_per_gpu_on_gpu_nodes():
    job = pytorchjob(MANIFESTS / "overlays" / "gcp" / "train-job")
    for replica in replicas(job).values():
        spec = replica["template"]["spec"]
        resources = spec["containers"][0]["resources"]
        assert resources["limits"]["nvidia.com/gpu"] == job["spec"]["nprocPerNode"]
        assert resources["requests"]["nvidia.com/gpu"] == resources["limits"]["nvidia.com/gpu"]
        assert spec["nodeSelector"]["cloud.google.com/gke-accelerator"]
        assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in spec["tolerations"]
    cpu_job = pytorchjob(MANIFESTS / "overlays" / "local" / "train-job")
    for replica in replicas(cpu_job).values():
        assert "nvidia.com/gpu" not in json.dumps(replica)


def test_manifests_use_only_images_that_docker_builds():
    default = images.ImageSettings(registry=images.DEFAULT_REGISTRY, tag=images.DEFAULT_TAG)
    for directory in BUILDS:
        for doc in build(directory):
            for container in containers(doc):
                image = container["image"]
                if image.startswith(THIRD_PARTY_IMAGES):
                    continue
                assert image == default.image(image.rsplit("/", 1)[-1].split(":")[0]), f"{rel(directory)}: {image}"


# ------------------------------------------------------------------------------ kubectl kustomize


@pytest.mark.skipif(KUBECTL is None, reason="kubectl (with built-in kustomize) is not installed")
@pytest.mark.parametrize("directory", BUILDS, ids=rel)
def test_kubectl_kustomize_renders_objects_the_kubernetes_models_accept(directory):
    from kubernetes.client import ApiClient

    result = subprocess.run([KUBECTL, "kustomize", str(directory)], capture_output=True, text=True, timeout=60,
                            env={**os.environ, "KUBECONFIG": os.devnull})
    assert result.returncode == 0, result.stderr
    rendered = [d for d in yaml.safe_load_all(result.stdout) if d]
    assert {ResourceId.of(d) for d in rendered} == {ResourceId.of(d) for d in build(directory)}
    client = ApiClient()
    for doc in rendered:
        if doc["kind"] == "PyTorchJob":
            continue  # checked against the kubeflow-training models above
        class Response:
            data = json.dumps(doc)

        model = client.deserialize(Response(), f"V1{doc['kind']}")
        assert client.sanitize_for_serialization(model) == doc, f"{doc['kind']} {doc['metadata']['name']}: unknown field"
        if rel(directory).startswith("overlays/"):
            assert doc["metadata"]["namespace"] == "kubeflow"
