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

from components.launch.cluster import delete_job, run_pytorchjob
from components.launch.spec import LaunchSpec, TrainingFailed
from tests.docker.build_files import REPO
from tests.launch.fake_k8s import FAILURE_SCRIPT, SUCCESS_SCRIPT, FakeKubernetes
from tests.manifests.kustomize import build, load_docs

MANIFESTS = REPO / "manifests"
LAUNCHER_RBAC = MANIFESTS / "base" / "launcher-rbac.yaml"
# What issue #8 allows the launcher, at most.
ALLOWED = {("kubeflow.org", "pytorchjobs", v) for v in ("create", "get", "list", "watch", "delete")} | {
    ("", r, v) for r in ("pods", "pods/log") for v in ("get", "list")}

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
    """Every request of: a job that succeeds; one that fails (pods listed, logs read); a
    retried step that finds its finished job (get, delete, wait until gone, create); and the
    pipeline's cleanup of a job that is already gone."""
    calls: list[tuple[str, str, dict]] = []
    command = ["torchrun", "--nnodes=2", "--nproc_per_node=1", "-m", "components.train", "--config_path=c.yaml"]
    for index, script in enumerate((SUCCESS_SCRIPT, FAILURE_SCRIPT)):
        with FakeKubernetes(script=script) as fake:
            kubeconfig = fake.kubeconfig(tmp_path_factory.mktemp("k8s") / "kubeconfig")
            spec = LaunchSpec(job_name=f"recap-train-rbac-{index}", image="ghcr.io/recap-pipeline/recap-train:0.1.0",
                              num_workers=2, timeout_s=30.0, poll_interval_s=0.01, cleanup="never")
            if script is FAILURE_SCRIPT:
                with pytest.raises(TrainingFailed):
                    run_pytorchjob(spec, command, kubeconfig=kubeconfig)
                # the step is retried: the finished job is found, deleted, and created again
                with pytest.raises(TrainingFailed):
                    run_pytorchjob(spec, command, kubeconfig=kubeconfig)
            else:
                run_pytorchjob(spec, command, kubeconfig=kubeconfig)
            assert delete_job(spec.job_name, spec.namespace, kubeconfig=kubeconfig) is True
            assert delete_job(spec.job_name, spec.namespace, kubeconfig=kubeconfig) is False
            calls += [(m, p, q) for (m, p), q in zip(fake.calls, fake.queries, strict=True)]
    return calls


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
def test_recorded_calls_cover_the_launcher_paths(recorded):
    kinds = {authorization(m, p, q)[1:] for m, p, q in recorded}
    # create, poll, delete, list pods and read logs all happened: the replay is not trivial
    assert {("kubeflow.org", "pytorchjobs", "create"), ("kubeflow.org", "pytorchjobs", "get"),
            ("kubeflow.org", "pytorchjobs", "delete"), ("", "pods", "list"), ("", "pods/log", "get")} <= kinds


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


def test_launcher_role_grants_nothing_beyond_the_issue():
    granted = set()
    for rule in launcher_role()["rules"]:
        assert "*" not in rule["apiGroups"] + rule["resources"] + rule["verbs"]
        granted |= {(g, r, v) for g in rule["apiGroups"] for r in rule["resources"] for v in rule["verbs"]}
    assert granted <= ALLOWED, granted - ALLOWED


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
