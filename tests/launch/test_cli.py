"""`recap launch`: the manifest it would submit, and the cleanup action against the fake API."""

from __future__ import annotations

import json
import re

import pytest

from components.cli import main
from tests.launch.fake_k8s import SUCCEEDS, FakeKubernetes
from tests.launch.training_operator import OperatorJob

TRAINER = ["--config-path", "configs/local.yaml", "--train-data", "gs://b/tf/train", "--validation-data",
           "gs://b/tf/eval", "--save-dir", "gs://b/ckpt", "--model-dir", "gs://b/model"]


def test_dry_run_prints_the_pytorchjob_named_after_the_run(capsys):
    code = main(["launch", "--dry-run", "--backend", "kubernetes", "--run-id", "6f1c-77", "--image", "r/recap-train:1",
                 "--num-workers", "2", "--gpus-per-worker", "1", "--timeout", "100",
                 "--num-train-steps", "9", *TRAINER])
    assert code == 0
    job = json.loads(capsys.readouterr().out)
    assert job["metadata"]["name"] == "recap-train-6f1c-77"
    assert job["spec"]["runPolicy"]["activeDeadlineSeconds"] == 700
    args = job["spec"]["pytorchReplicaSpecs"]["Worker"]["template"]["spec"]["containers"][0]["args"]
    assert "--num_train_steps=9" in args and "--nnodes=2" in args


def test_kubernetes_backend_does_not_look_for_the_config_on_this_disk(capsys, tmp_path, monkeypatch):
    """The config path is read inside the train image (WORKDIR /opt/recap), not here."""
    monkeypatch.chdir(tmp_path)  # outside a checkout: configs/prod.yaml does not exist here
    args = ["launch", "--dry-run", "--run-id", "r1", "--image", "r/recap-train:1", *TRAINER]
    args[args.index("configs/local.yaml")] = "configs/prod.yaml"
    assert main([*args, "--backend", "kubernetes"]) == 0
    assert "--config_path=configs/prod.yaml" in capsys.readouterr().out
    assert main([*args, "--backend", "local"]) == 2
    assert "configs/prod.yaml: config file not found" in capsys.readouterr().err


def test_missing_trainer_arguments_are_a_usage_error(capsys):
    assert main(["launch", "--run-id", "x"]) == 2
    assert "missing --config-path" in capsys.readouterr().err


@pytest.mark.integration
def test_delete_action_removes_the_runs_job(tmp_path):
    with FakeKubernetes(scenario=SUCCEEDS) as fake:
        kubeconfig = fake.kubeconfig(tmp_path / "kc")
        left_behind = {"metadata": {"name": "recap-train-6f1c-77"}, "spec": {"pytorchReplicaSpecs": {}}}
        fake.jobs[("kubeflow", "recap-train-6f1c-77")] = OperatorJob(left_behind, SUCCEEDS, fake.clock)
        assert main(["launch", "--delete", "--run-id", "6f1c-77", "--kubeconfig", kubeconfig]) == 0
        assert fake.calls == [("DELETE", "/apis/kubeflow.org/v1/namespaces/kubeflow/pytorchjobs/recap-train-6f1c-77")]
        assert fake.jobs == {}
        # a second cleanup (the exit handler after a launcher that already deleted) is fine
        assert main(["launch", "--delete", "--run-id", "6f1c-77", "--kubeconfig", kubeconfig]) == 0


@pytest.mark.integration
def test_a_split_that_breaks_the_contract_is_refused_before_any_job_is_created(tmp_path, capsys):
    """The launcher reads each split's first records: a label of 7 stops it with the shard, record and
    column named, and the cluster never sees a PyTorchJob (no GPU node is asked for)."""
    from tests.convert.rawdata import write_raw
    from tests.records.test_sample_check import LABEL, SCHEMA, break_column, convert

    raw = tmp_path / "raw"
    write_raw(SCHEMA, str(raw), rows=80, files=1, manifest=False)
    break_column(raw, LABEL.column, 5, 7)
    split = convert(raw, tmp_path / "out")
    trainer = ["--config-path", "configs/local.yaml", "--train-data", str(split), "--validation-data",
               str(tmp_path / "out" / "eval"), "--save-dir", str(tmp_path / "ckpt"), "--model-dir", str(tmp_path / "m")]
    with FakeKubernetes(scenario=SUCCEEDS) as fake:
        kubeconfig = fake.kubeconfig(tmp_path / "kc")
        code = main(["launch", "--backend", "kubernetes", "--run-id", "bad-1", "--image", "r/recap-train:1",
                     "--kubeconfig", kubeconfig, *trainer])
        assert fake.calls == []
    err = capsys.readouterr().err
    assert code == 1, err
    assert re.search(rf"train/part-0000[01]-of-00002\.tfrecord\.gz: record \d+: column {LABEL.column!r} "
                     r"\(feature [\w.]+\) has value 7(\.0)? .*\[label_not_binary\]", err), err
