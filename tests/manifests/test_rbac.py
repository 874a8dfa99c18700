"""The launcher's Role grants every Kubernetes API call the launcher really makes, and no more.

The calls are recorded, not listed by hand: the real launcher (components/launch/cluster.py,
through the kubeflow-training SDK) runs against tests/launch/fake_k8s.py, a loopback API
server that records each (method, path). Each call is turned into the (apiGroup, resource,
verb) the API server would authorize, the way Kubernetes' request-info resolver does.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.docker.build_files import REPO
from tests.launch.fake_k8s import exercise_launcher
from tests.manifests.kustomize import build, load_docs

MANIFESTS = REPO / "manifests"
LAUNCHER_RBAC = MANIFESTS / "base" / "launcher-rbac.yaml"

_PATH = re.compile(
    r"^/(?:api/(?P<core_version>v1)|apis/(?P<group>[^/]+)/(?P<version>[^/]+))"
    r"(?:/namespaces/(?P<namespace>[^/]+))?/(?P<resource>[^/]+)(?:/(?P<name>[^/]+)(?:/(?P<sub>[^/]+))?)?$"
)


def authorization(method: str, path: str, query: dict[str, list[str]] | None = None) -> tuple[str, str, str, str]:
    """(namespace, apiGroup, resource[/subresource], verb) as the API server authorizes a request."""
    match = _PATH.match(path)
    if match is None:
        raise ValueError(f"not a resource path: {path}")
    named = match["name"] is not None
    verb = {"POST": "create", "PUT": "update", "PATCH": "patch"}.get(method)
    if method == "DELETE":
        verb = "delete" if named else "deletecollection"
    elif method == "GET":
        watching = (query or {}).get("watch", [""])[0] in ("true", "1")
        verb = "watch" if watching else ("get" if named else "list")
    resource = match["resource"] + (f"/{match['sub']}" if match["sub"] else "")
    return match["namespace"] or "", match["group"] or "", resource, verb or method.lower()


def grants(rules: list[dict], group: str, resource: str, verb: str, name: str | None = None) -> bool:
    for rule in rules:
        if group not in rule.get("apiGroups", []) or verb not in rule.get("verbs", []):
            continue
        if resource not in rule.get("resources", []):
            continue
        if rule.get("resourceNames") and name not in rule["resourceNames"]:
            continue
        return True
    return False


def launcher_role() -> dict:
    (role,) = [d for d in load_docs(LAUNCHER_RBAC) if d["kind"] == "Role"]
    return role


@pytest.fixture(scope="module")
def recorded(tmp_path_factory) -> list[tuple[str, str, dict]]:
    """Every request of the launcher on each of its paths (tests/launch/fake_k8s.py
    `exercise_launcher`): success, a crash loop that the operator ends at the backoff limit
    (pods listed and logs read while it runs), our own timeout, a finished job of the same run
    replaced, a create refused, and the exit handler's delete of a job that is there or gone."""
    calls, queries = exercise_launcher(tmp_path_factory.mktemp("k8s"))
    return [(m, p, q) for (m, p), q in zip(calls, queries, strict=True)]


def granted_rules(role: dict) -> set[tuple[str, str, str]]:
    return {(g, r, v) for rule in role["rules"] for g in rule["apiGroups"] for r in rule["resources"]
            for v in rule["verbs"]}


def test_authorization_mapping_follows_kubernetes_request_info():
    jobs = "/apis/kubeflow.org/v1/namespaces/ns/pytorchjobs"
    assert authorization("POST", jobs) == ("ns", "kubeflow.org", "pytorchjobs", "create")
    assert authorization("GET", jobs) == ("ns", "kubeflow.org", "pytorchjobs", "list")
    assert authorization("GET", jobs, {"watch": ["true"]}) == ("ns", "kubeflow.org", "pytorchjobs", "watch")
    assert authorization("GET", f"{jobs}/j") == ("ns", "kubeflow.org", "pytorchjobs", "get")
    assert authorization("DELETE", f"{jobs}/j") == ("ns", "kubeflow.org", "pytorchjobs", "delete")
    assert authorization("DELETE", jobs) == ("ns", "kubeflow.org", "pytorchjobs", "deletecollection")
    assert authorization("GET", "/api/v1/namespaces/ns/pods/p/log") == ("ns", "", "pods/log", "get")
    assert authorization("PATCH", "/api/v1/nodes/n") == ("", "", "nodes", "patch")


@pytest.mark.integration
def test_the_launcher_role_grants_exactly_the_recorded_calls(recorded):
    """Least privilege both ways: every recorded call is granted, and every grant was used."""
    used = {authorization(m, p, q)[1:] for m, p, q in recorded}
    assert granted_rules(launcher_role()) == used


@pytest.mark.integration
def test_launcher_role_grants_every_recorded_call(recorded):
    rules = launcher_role()["rules"]
    namespaces = set()
    for method, path, query in recorded:
        namespace, group, resource, verb = authorization(method, path, query)
        namespaces.add(namespace)
        name = path.rsplit("/", 1)[-1] if verb in ("get", "delete", "update", "patch") else None
        assert grants(rules, group, resource, verb, name), f"{method} {path} needs {verb} {group}/{resource}"
    # a Role is namespaced: every call must stay in the one namespace the overlays install it in
    (namespace,) = namespaces
    for overlay in ("local", "gcp"):
        kustomization = (MANIFESTS / "overlays" / overlay / "kustomization.yaml").read_text()
        assert f"namespace: {namespace}" in kustomization


def test_no_role_in_manifests_uses_wildcards_or_cluster_scope():
    for path in MANIFESTS.rglob("*.yaml"):
        if path.name == "kustomization.yaml":
            continue
        for doc in load_docs(path):
            assert doc["kind"] not in ("ClusterRole", "ClusterRoleBinding"), f"{path}: cluster-wide RBAC"
            for rule in doc.get("rules", []):
                assert "*" not in rule["apiGroups"] + rule["resources"] + rule["verbs"], path


@pytest.mark.parametrize("overlay", ["base", "overlays/local", "overlays/gcp"])
def test_role_bindings_bind_existing_roles_to_existing_service_accounts(overlay):
    docs = build(Path(MANIFESTS / overlay))
    roles = {d["metadata"]["name"] for d in docs if d["kind"] == "Role"}
    accounts = {d["metadata"]["name"] for d in docs if d["kind"] == "ServiceAccount"}
    bindings = [d for d in docs if d["kind"] == "RoleBinding"]
    assert any(b["roleRef"]["name"] == "recap-launcher" for b in bindings)
    for binding in bindings:
        assert binding["roleRef"]["kind"] == "Role" and binding["roleRef"]["name"] in roles
        for subject in binding["subjects"]:
            assert subject["kind"] == "ServiceAccount" and subject["name"] in accounts
    launcher = next(b for b in bindings if b["roleRef"]["name"] == "recap-launcher")
    assert [s["name"] for s in launcher["subjects"]] == ["recap-pipeline"], "trainer pods get no API rights"
