"""The KFP component bodies on the `kubernetes` backend, against the loopback Kubernetes API:
the train step submits a PyTorchJob named after the run, the exit handler deletes that same job."""

from __future__ import annotations

import pytest
from kfp import dsl

from components.launch import job_name
from pipeline.images import ImageSettings
from pipeline.kfp_components import make_components
from tests.launch.fake_k8s import RUNS_FOREVER, SUCCEEDS, FakeKubernetes

pytestmark = pytest.mark.integration
JOBS = "/apis/kubeflow.org/v1/namespaces/team-a/pytorchjobs"


@pytest.fixture
def ops():
    return make_components(ImageSettings(registry="r.example", tag="1"))


def converted_split(uri: str, tmp_path) -> None:
    """A few prod-schema rows converted to `uri` (the train step reads each split's first records)."""
    from components.common.schema import load_schema
    from components.convert import ConvertSettings, run
    from tests.convert.rawdata import write_raw

    schema = load_schema("prod")
    write_raw(schema, str(tmp_path / "raw"), rows=40, files=1, manifest=False)
    run(str(tmp_path / "raw"), schema, uri, ConvertSettings(shards=2, workers=1))


def test_train_step_submits_a_pytorchjob_named_after_the_run(ops, tmp_path, monkeypatch, gcs_bucket):
    bucket = gcs_bucket
    converted_split(f"{bucket}/recap/convert-1/tfrecords", tmp_path)
    with FakeKubernetes(scenario=SUCCEEDS, namespace="team-a") as fake:
        monkeypatch.setenv("KUBECONFIG", fake.kubeconfig(tmp_path / "kc"))
        tfrecords = dsl.Dataset(name="tfrecords", uri=str(tmp_path / "convert/tfrecords"),
                                metadata={"data_uri": f"{bucket}/recap/convert-1/tfrecords"})
        model = dsl.Model(name="model", uri=str(tmp_path / "train/model"), metadata={})
        ops.train.python_func(
            tfrecords=tfrecords, train_config="configs/prod.yaml", data_root=f"{bucket}/recap",
            backend="kubernetes", run_id="0b6f7c1e-run", train_image="r.example/recap-train:1", namespace="team-a",
            num_workers=2, procs_per_worker=4, gpus_per_worker=4, cpu_per_worker="16", memory_per_worker="64Gi",
            num_train_steps=0, timeout_s=60, gcs_secret="", service_account="recap-trainer", model=model,
            poll_interval_s=0.05,
        )
        job = fake.created[0]
        assert job["metadata"]["name"] == job_name("0b6f7c1e-run")
        container = job["spec"]["pytorchReplicaSpecs"]["Worker"]["template"]["spec"]["containers"][0]
        assert container["image"] == "r.example/recap-train:1"
        pod = job["spec"]["pytorchReplicaSpecs"]["Worker"]["template"]["spec"]
        assert pod["serviceAccountName"] == "recap-trainer"
        assert f"--train_data={bucket}/recap/convert-1/tfrecords/train" in container["args"]
        save_dir = next(a for a in container["args"] if a.startswith("--save_dir="))
        assert save_dir.startswith(f"--save_dir={bucket}/recap/train-")
        assert model.metadata["data_uri"].startswith(f"{bucket}/recap/train-")
        assert model.metadata["job_name"] == job["metadata"]["name"]
        assert fake.calls[-1] == ("DELETE", f"{JOBS}/{job_name('0b6f7c1e-run')}")


def test_exit_handler_deletes_the_job_the_train_step_created(ops, tmp_path, monkeypatch):
    with FakeKubernetes(scenario=RUNS_FOREVER, namespace="team-a") as fake:
        monkeypatch.setenv("KUBECONFIG", fake.kubeconfig(tmp_path / "kc"))
        from components.launch.cluster import make_client
        from components.launch.pytorchjob import build_pytorchjob
        from components.launch.spec import LaunchSpec

        name = job_name("0b6f7c1e-run")
        make_client("team-a").create_job(job=build_pytorchjob(LaunchSpec(job_name=name, image="i", namespace="team-a"),
                                                              ["torchrun"]), namespace="team-a")
        ops.delete_training_job.python_func(run_id="0b6f7c1e-run", namespace="team-a", backend="kubernetes")
        assert fake.calls[-1] == ("DELETE", f"{JOBS}/{name}") and fake.jobs == {}
        ops.delete_training_job.python_func(run_id="0b6f7c1e-run", namespace="team-a", backend="local")
        assert len(fake.calls) == 2  # the local backend has no job to delete


def test_train_step_refuses_too_few_shards_before_creating_a_job(ops, tmp_path, monkeypatch):
    """convert's shard counts travel in the artifact's metadata; a job that could not start is never created."""
    from components.common.errors import ConfigError

    with FakeKubernetes(scenario=SUCCEEDS, namespace="team-a") as fake:
        monkeypatch.setenv("KUBECONFIG", fake.kubeconfig(tmp_path / "kc"))
        tfrecords = dsl.Dataset(name="tfrecords", uri=str(tmp_path / "convert/tfrecords"),
                                metadata={"data_uri": "gs://bucket/recap/convert-1/tfrecords", "train_shards": 4,
                                          "eval_shards": 4})
        model = dsl.Model(name="model", uri=str(tmp_path / "train/model"), metadata={})
        with pytest.raises(ConfigError, match=r"on 16 ranks \(2 node\(s\) x 8 process\(es\)\): the train_data split "
                                              r"has 4 shard\(s\)"):
            ops.train.python_func(
                tfrecords=tfrecords, train_config="configs/prod.yaml", data_root="gs://bucket/recap",
                backend="kubernetes", run_id="0b6f7c1e-run", train_image="r.example/recap-train:1",
                namespace="team-a", num_workers=2, procs_per_worker=0, gpus_per_worker=8, cpu_per_worker="",
                memory_per_worker="", num_train_steps=0, timeout_s=60, gcs_secret="", service_account="recap-trainer",
                model=model, poll_interval_s=0.05,
            )
        assert fake.created == []


def test_train_step_refuses_a_split_that_breaks_the_contract_before_creating_a_job(ops, tmp_path, monkeypatch,
                                                                                 gcs_bucket):
    """The first records of each split are read before the PyTorchJob is created: no GPU node is asked for."""
    from components.common import storage
    from components.common.errors import DataError
    from components.common.manifest import read_manifest

    data = f"{gcs_bucket}/recap/convert-1/tfrecords"
    converted_split(data, tmp_path)
    gone = next(entry.path for entry in read_manifest(f"{data}/train")[0].files if entry.records)
    storage.delete(f"{data}/train/{gone}")
    with FakeKubernetes(scenario=SUCCEEDS, namespace="team-a") as fake:
        monkeypatch.setenv("KUBECONFIG", fake.kubeconfig(tmp_path / "kc"))
        tfrecords = dsl.Dataset(name="tfrecords", uri=str(tmp_path / "convert/tfrecords"), metadata={"data_uri": data})
        with pytest.raises(DataError, match=rf"train/{gone}: listed in the manifest but missing"):
            ops.train.python_func(
                tfrecords=tfrecords, train_config="configs/prod.yaml", data_root=f"{gcs_bucket}/recap",
                backend="kubernetes", run_id="0b6f7c1e-run", train_image="r.example/recap-train:1",
                namespace="team-a", num_workers=1, procs_per_worker=1, gpus_per_worker=0, cpu_per_worker="",
                memory_per_worker="", num_train_steps=0, timeout_s=60, gcs_secret="", service_account="recap-trainer",
                model=dsl.Model(name="model", uri=str(tmp_path / "train/model"), metadata={}), poll_interval_s=0.05,
            )
        assert fake.created == []
