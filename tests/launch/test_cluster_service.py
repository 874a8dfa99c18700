"""The Kubernetes backend's tf.data service: a dispatcher Pod, N worker Pods and a Service owned by
the PyTorchJob, so that nothing of it outlives the job however the job ends.

Against tests/launch/fake_k8s.py, whose garbage collector follows the real one: owners matched
by kind, name and uid in the same namespace; an object whose every owner is absent is deleted,
transitively; Orphan propagation strips the references instead.
"""

from __future__ import annotations

import pytest

from components.launch import LaunchSpec
from components.launch import run as launch
from components.launch.cluster import delete_job, make_client, run_pytorchjob
from components.launch.cluster_service import (
    DISPATCHER_PORT,
    build_service_objects,
    create_service,
    dispatcher_address,
)
from components.launch.pytorchjob import build_pytorchjob
from components.launch.spec import LaunchTimeout, PodRef, TrainingFailed
from components.trainer_command.flags import TrainerArgs
from tests.launch.fake_k8s import RUNS_FOREVER, SUCCEEDS, FakeKubernetes, crash_loop

pytestmark = pytest.mark.integration

NAME = "recap-train-svc-1"
NS = "kubeflow"
COMMAND = ["torchrun", "--nnodes=2", "-m", "components.train", "--config_path=c.yaml"]
ADDRESS = f"grpc://{NAME}-dispatcher.{NS}.svc:{DISPATCHER_PORT}"


def make_spec(**overrides) -> LaunchSpec:
    values = dict(job_name=NAME, image="registry.example/recap-train:1", num_workers=2, timeout_s=20.0,
                  poll_interval_s=0.01, data_service_workers=2)
    values.update(overrides)
    return LaunchSpec(**values)


def run_job(fake: FakeKubernetes, tmp_path, **overrides):
    return run_pytorchjob(make_spec(**overrides), COMMAND, kubeconfig=fake.kubeconfig(tmp_path / "kubeconfig"))


def creates(fake: FakeKubernetes, resource: str) -> int:
    return sum(1 for method, path in fake.calls if method == "POST" and path.endswith(f"/{resource}"))


def deletes(fake: FakeKubernetes, resource: str) -> int:
    return sum(1 for method, path in fake.calls if method == "DELETE" and f"/{resource}/" in path)


def test_the_trainer_gets_the_services_address_and_the_service_is_owned_by_the_job(tmp_path):
    """Through `recap launch`'s own path: the job's trainer reads from its dispatcher's Service,
    and every object of the service names the created job (with its uid) as controlling owner."""
    args = TrainerArgs.of("configs/local.yaml", train_data="gs://b/train", validation_data="gs://b/eval",
                          save_dir="gs://b/run", model_dir="gs://b/model")
    with FakeKubernetes(scenario=SUCCEEDS) as fake:
        result = launch(make_spec(), args, backend="kubernetes", kubeconfig=fake.kubeconfig(tmp_path / "kc"))
        assert result.status == "Succeeded"
        job = fake.created[0]
        trainer = job["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"][0]
        assert f"--data_service_dispatcher={ADDRESS}" in trainer["args"]
        assert "--data_service_connect_timeout_s=600.0" in trainer["args"]
        kinds = sorted((o["kind"], o["metadata"]["name"]) for o in fake.created_objects)
        assert kinds == [("Pod", f"{NAME}-data-worker-0"), ("Pod", f"{NAME}-data-worker-1"),
                         ("Pod", f"{NAME}-dispatcher"), ("Service", f"{NAME}-dispatcher")]
        for obj in fake.created_objects:
            assert obj["metadata"]["ownerReferences"] == [{
                "apiVersion": "kubeflow.org/v1", "kind": "PyTorchJob", "name": NAME,
                "uid": job["metadata"]["uid"], "controller": True}]
        # Deleting the job at the end removed the service by garbage collection, not by the launcher.
        assert fake.jobs == {} and fake.objects == {}
        assert sorted(name for _, name in fake.collected) == sorted(name for _, name in kinds)
        assert deletes(fake, "pods") == deletes(fake, "services") == 0


def test_the_service_selects_the_dispatcher_and_the_workers_find_it_and_advertise_their_pod_ip():
    objects = build_service_objects(make_spec(gcs_secret="gcs-key"), "uid-1")
    dispatcher, service, *workers = objects
    assert len(workers) == 2
    selector = service["spec"]["selector"]
    assert all(dispatcher["metadata"]["labels"][k] == v for k, v in selector.items())
    assert not any(all(w["metadata"]["labels"].get(k) == v for k, v in selector.items()) for w in workers)
    job_pod_labels = build_pytorchjob(make_spec(), COMMAND).spec.pytorch_replica_specs["Master"].template.metadata.labels
    assert not all(job_pod_labels.get(k) == v for k, v in selector.items()), "the trainer pods are not selected"
    (port,) = service["spec"]["ports"]
    (container,) = dispatcher["spec"]["containers"]
    assert port["port"] == DISPATCHER_PORT and port["targetPort"] in [p["name"] for p in container["ports"]]
    assert container["command"] == ["recap", "data-service", "dispatcher"]
    journal = next(a for a in container["args"] if a.startswith("--journal-dir="))
    assert any(journal.endswith(m["mountPath"]) for m in container["volumeMounts"])  # an emptyDir: survives restarts
    for worker in workers:
        (c,) = worker["spec"]["containers"]
        assert c["command"] == ["recap", "data-service", "worker"]
        assert f"--dispatcher={ADDRESS}" in c["args"] and "--worker-host=$(POD_IP)" in c["args"]
        pod_ip = next(e for e in c["env"] if e["name"] == "POD_IP")
        assert pod_ip["valueFrom"] == {"fieldRef": {"fieldPath": "status.podIP"}}
        assert {"name": "GOOGLE_APPLICATION_CREDENTIALS", "value": "/var/secrets/google/key.json"} in c["env"]
        assert "nvidia.com/gpu" not in c["resources"]["limits"]
    for pod in (dispatcher, *workers):
        assert pod["spec"]["restartPolicy"] == "Always"
        assert pod["spec"]["activeDeadlineSeconds"] == int(make_spec().timeout_s) + 600
    assert len(f"{'x' * 52}-dispatcher") == 63  # the longest job name still gives a valid Service name


@pytest.mark.parametrize("cleanup", ["always", "on_success"])
def test_a_failed_job_leaves_nothing_of_its_service_whether_deleted_or_kept(tmp_path, cleanup):
    with FakeKubernetes(scenario=crash_loop(pod="worker-0")) as fake:
        with pytest.raises(TrainingFailed, match="backoff limit"):
            run_job(fake, tmp_path, backoff_limit=1, cleanup=cleanup)
        assert fake.objects == {}
        if cleanup == "on_success":  # the failed job is kept for its logs; its service is not
            assert fake.job(NAME) is not None
            assert deletes(fake, "pods") == 3 and deletes(fake, "services") == 1
        else:
            assert fake.jobs == {} and deletes(fake, "pods") == 0


def test_our_timeout_deletes_the_job_and_with_it_the_service(tmp_path):
    with FakeKubernetes(scenario=RUNS_FOREVER) as fake:
        with pytest.raises(LaunchTimeout):
            run_job(fake, tmp_path, timeout_s=0.5)
        assert creates(fake, "pods") == 3 and creates(fake, "services") == 1
        assert fake.jobs == {} and fake.objects == {}


def test_a_succeeded_job_kept_by_cleanup_never_still_has_its_service_removed(tmp_path):
    with FakeKubernetes(scenario=SUCCEEDS) as fake:
        run_job(fake, tmp_path, cleanup="never")
        assert fake.job(NAME) is not None and fake.objects == {}


def test_deleting_the_job_by_hand_or_through_its_owner_pod_collects_the_service(tmp_path):
    """Kubernetes' garbage collector, not the launcher: `kubectl delete pytorchjob`, the operator's
    TTL, or the KFP step pod that owns the job being deleted (owner of the owner)."""
    with FakeKubernetes(scenario=RUNS_FOREVER) as fake:
        client = make_client(NS, fake.kubeconfig(tmp_path / "kc"))
        spec = make_spec()
        client.create_job(job=build_pytorchjob(spec, COMMAND), namespace=NS)
        create_service(client, spec, fake.job(NAME).body["metadata"]["uid"])
        assert len(fake.owned_by(NAME)) == 4
        delete_job(NAME, NS, client=client)
        assert fake.objects == {}

        fake.add_step_pod("step-pod", "step-uid")
        owned = make_spec(owner=PodRef("step-pod", "step-uid"))
        client.create_job(job=build_pytorchjob(owned, COMMAND), namespace=NS)
        create_service(client, owned, fake.job(NAME).body["metadata"]["uid"])
        assert len(fake.objects) == 4
        fake.delete_step_pod("step-uid")
        assert fake.jobs == {} and fake.objects == {}


def test_orphan_propagation_keeps_the_service_and_a_wrong_uid_loses_it_at_once(tmp_path):
    """Why the uid is read back from the created job: an owner that does not match by uid is absent
    to the garbage collector, which deletes the dependent at once."""
    with FakeKubernetes(scenario=RUNS_FOREVER) as fake:
        client = make_client(NS, fake.kubeconfig(tmp_path / "kc"))
        spec = make_spec(data_service_workers=1)
        client.create_job(job=build_pytorchjob(spec, COMMAND), namespace=NS)
        create_service(client, spec, "not-the-jobs-uid")
        assert fake.objects == {} and len(fake.collected) == 3
        create_service(client, spec, fake.job(NAME).body["metadata"]["uid"])
        from kubeflow.training import models

        client.delete_job(name=NAME, namespace=NS, delete_options=models.V1DeleteOptions(propagation_policy="Orphan"))
        assert len(fake.objects) == 3
        assert all(not o["metadata"]["ownerReferences"] for o in fake.objects.values())


def test_a_refused_service_object_fails_the_launch_naming_it_and_leaves_nothing(tmp_path):
    with FakeKubernetes(scenario=RUNS_FOREVER, refuse=("services",)) as fake:
        with pytest.raises(TrainingFailed, match=f"cannot create Service {NAME}-dispatcher \\(403\\)"):
            run_job(fake, tmp_path, cleanup="never")
        assert fake.job(NAME) is not None  # kept, as the policy says
        assert fake.objects == {}  # the dispatcher pod made before the refusal was deleted


def test_a_retried_launch_reattaches_to_the_services_an_earlier_attempt_made(tmp_path):
    with FakeKubernetes(scenario=RUNS_FOREVER) as fake:
        client = make_client(NS, fake.kubeconfig(tmp_path / "kc"))
        spec = make_spec(data_service_workers=1)
        client.create_job(job=build_pytorchjob(spec, COMMAND), namespace=NS)
        create_service(client, spec, fake.job(NAME).body["metadata"]["uid"])
        fake.scenario = SUCCEEDS
        fake.job(NAME).scenario = SUCCEEDS
        result = run_job(fake, tmp_path, data_service_workers=1)  # 409 on the job and on every object
        assert result.status == "Succeeded"
        assert fake.jobs == {} and fake.objects == {}


def test_the_address_is_a_cluster_dns_name_in_the_jobs_namespace():
    assert dispatcher_address(make_spec(namespace="team-a")) == f"grpc://{NAME}-dispatcher.team-a.svc:5050"
