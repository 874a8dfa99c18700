"""Every object manifests/ renders is one the API server accepts as written: built-in kinds against
Kubernetes' own JSON schemas (kubernetes-validate, strict: an unknown field fails), the
PyTorchJobs against the PyTorchJob CRD schema and the Training Operator's webhook rules."""

from __future__ import annotations

import copy

import kubernetes_validate
import pytest
import yaml

from tests.docker.build_files import REPO
from tests.launch.crd_schema import schema_errors
from tests.launch.training_operator import webhook_errors
from tests.manifests.kustomize import apply_component, build

MANIFESTS = REPO / "manifests"
BUILDS = sorted(p.parent for p in MANIFESTS.rglob("kustomization.yaml")
                if (yaml.safe_load(p.read_text()) or {}).get("kind") != "Component")
# The oldest and newest Kubernetes releases we claim (README), each with its own schemas.
KUBERNETES_VERSIONS = ("1.30", "1.37")


def rendered(directory) -> list[dict]:
    docs = build(directory)
    if directory.name == "train-job":  # also with the key Secret component, as the README shows
        with_key = copy.deepcopy(docs)
        apply_component(with_key, MANIFESTS / "components" / "gcs-key-secret")
        docs += with_key
    return docs


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("directory", BUILDS, ids=lambda d: str(d.relative_to(MANIFESTS)))
def test_every_rendered_object_validates_strictly(directory, version):
    for doc in rendered(directory):
        if doc["kind"] == "PyTorchJob":
            assert schema_errors(doc) == [], doc["metadata"]["name"]
            assert webhook_errors(doc) == [], doc["metadata"]["name"]
        else:
            kubernetes_validate.validate(doc, version, strict=True)


def test_the_strict_validation_bites():
    role = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": "r"},
            "rules": [{"apiGroups": [""], "resources": ["pods"], "verb": ["list"]}]}  # `verbs`, misspelt
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(role, "1.37", strict=True)
    account = {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "a"},
               "automountServiceAccountToken": "false"}  # a string, not a boolean
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(account, "1.37", strict=True)
