"""The PyTorchJob as the Training Operator (v1.9) runs it, emulated with containers: the
launcher's pod template, the env the operator injects, a master and a worker on the host
network, and restartPolicy OnFailure bringing a killed replica back to resume from the last
committed checkpoint."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid

import pytest

from components.common import storage
from components.common.config import read_yaml
from components.launch import LaunchSpec, TrainerArgs
from components.launch import run as launch
from components.launch.command import trainer_command
from components.launch.docker import expand, operator_env, pods
from components.launch.pytorchjob import build_pytorchjob, to_manifest
from components.train import checkpoint
from tests.docker.build_files import REPO

STEPS = 300  # past configs/local.yaml's first checkpoint, so a kill after it has one to resume from
CHECKPOINT_EVERY = read_yaml(os.path.join(REPO, "configs", "local.yaml"))["training"]["checkpoint_every_n"]
PORT = 29871


def two_node_spec(image: str = "recap-train-cpu:test", **overrides) -> LaunchSpec:
    return LaunchSpec(**{"job_name": "recap-train-abc", "image": image, "num_workers": 2, "procs_per_worker": 1,
                         "cpu": "1", "memory": "4Gi", "timeout_s": 900.0, **overrides})


def trainer_args(root: str = "gs://b/run") -> TrainerArgs:
    return TrainerArgs.of("configs/local.yaml", train_data=f"{root}/data/train",
                          validation_data=f"{root}/data/eval", save_dir=f"{root}/checkpoints",
                          model_dir=f"{root}/model", num_train_steps=STEPS)


# ----------------------------------------------------------------- the pods (no engine)


def test_each_replica_gets_the_template_plus_the_operators_env():
    spec = two_node_spec(env=(("STORAGE_EMULATOR_HOST", "http://127.0.0.1:9"),))
    command = trainer_command(spec, trainer_args(), "kubernetes")
    master, worker = pods(spec, command, PORT)
    template = to_manifest(build_pytorchjob(spec, command))["spec"]["pytorchReplicaSpecs"]["Master"]
    container = template["template"]["spec"]["containers"][0]
    assert [p["name"] for p in (master, worker)] == ["recap-train-abc-master-0", "recap-train-abc-worker-0"]
    for pod in (master, worker):
        assert pod["image"] == container["image"] == "recap-train-cpu:test"
        assert pod["entrypoint"] == container["command"] == ["torchrun"]
        # the kubelet expands $(MASTER_ADDR):$(MASTER_PORT) from the env the operator set
        assert f"--rdzv_endpoint=recap-train-abc-master-0:{PORT}" in pod["args"]
        assert [a for a in pod["args"] if "rdzv_endpoint" not in a] == \
            [a for a in container["args"] if "rdzv_endpoint" not in a]
        assert pod["env"]["STORAGE_EMULATOR_HOST"] == "http://127.0.0.1:9"  # the template's own env stays
        assert (pod["cpus"], pod["memory"]) == (1.0, 4 * 2**30)
    # pkg/controller.v1/pytorch/envvar.go + master.go at v1.9.0, in the operator's order
    assert operator_env(_manifest(spec, command), "Worker", 0) == [
        ("PYTHONUNBUFFERED", "1"), ("MASTER_PORT", str(PORT)), ("PET_MASTER_PORT", str(PORT)),
        ("MASTER_ADDR", "recap-train-abc-master-0"), ("PET_MASTER_ADDR", "recap-train-abc-master-0"),
        ("WORLD_SIZE", "2"), ("RANK", "1"), ("PET_NODE_RANK", "1"), ("PET_NPROC_PER_NODE", "1"),
        ("PET_NNODES", "2"),
    ]
    assert (master["env"]["RANK"], master["env"]["PET_NODE_RANK"]) == ("0", "0")
    # one address per pod (all loopback), every pod name resolvable from every pod
    assert master["hosts"] == worker["hosts"] == {"recap-train-abc-master-0": "127.0.10.1",
                                                  "recap-train-abc-worker-0": "127.0.10.2"}


def test_world_size_counts_processes_not_nodes():
    spec = two_node_spec(num_workers=3, procs_per_worker=2)
    env = dict(operator_env(_manifest(spec, trainer_command(spec, trainer_args(), "kubernetes")), "Worker", 1))
    assert (env["WORLD_SIZE"], env["RANK"], env["PET_NNODES"], env["PET_NPROC_PER_NODE"]) == ("6", "2", "3", "2")


def test_var_references_expand_as_the_kubelet_does():
    env = {"A": "x", "B": "y"}
    assert expand("$(A):$(B)", env) == "x:y"
    assert expand("$$(A) $(MISSING) $A", env) == "$(A) $(MISSING) $A"


def _manifest(spec: LaunchSpec, command: list[str]) -> dict:
    manifest = to_manifest(build_pytorchjob(spec, command))
    for replica in manifest["spec"]["pytorchReplicaSpecs"].values():
        replica["template"]["spec"]["containers"][0]["ports"] = [{"name": "pytorchjob-port", "containerPort": PORT}]
    return manifest


# ----------------------------------------------------------------- the job, in containers


@pytest.fixture(scope="module")
def converted(gcs_emulator, tmp_path_factory):
    """Generated raw data converted into a bucket on the emulator (from the venv)."""
    from tests.conftest import create_bucket

    root = create_bucket(f"job-{uuid.uuid4().hex[:10]}") + "/run"
    raw = tmp_path_factory.mktemp("raw")
    recap = os.path.join(os.path.dirname(sys.executable), "recap")
    for argv in ([recap, "data", "generate", "--schema", "local", "--rows", "20000", "--files", "2", "--seed", "3",
                  "--out", str(raw)],
                 [recap, "convert", "--input", str(raw), "--schema", "local", "--out", f"{root}/data"]):
        subprocess.run(argv, check=True, cwd=REPO, capture_output=True, timeout=600)
    return root


@pytest.mark.integration
@pytest.mark.timeout(1800)
def test_killed_master_restarts_and_resumes_from_the_last_committed_checkpoint(images, converted, gcs_emulator,
                                                                               capsys):
    import docker

    job = f"recap-train-{uuid.uuid4().hex[:8]}"
    spec = two_node_spec(images["train-cpu"], job_name=job, env=(("STORAGE_EMULATOR_HOST", gcs_emulator),))
    args = trainer_args(converted)
    outcome: list[object] = []
    runner = threading.Thread(target=lambda: outcome.append(_run(spec, args)))
    runner.start()
    client = docker.from_env()
    first = _wait_for(lambda: checkpoint.latest_checkpoint(args.value("save_dir")) or _failed(outcome), deadline_s=600)
    assert not isinstance(first, BaseException), first
    master = client.containers.get(f"{job}-master-0")
    worker = client.containers.get(f"{job}-worker-0")
    env = dict(item.split("=", 1) for item in worker.attrs["Config"]["Env"])
    assert (env["MASTER_ADDR"], env["RANK"], env["WORLD_SIZE"], env["PET_NNODES"]) == (f"{job}-master-0", "1", "2", "2")
    assert worker.attrs["HostConfig"]["NetworkMode"] == "host"
    assert master.attrs["HostConfig"]["RestartPolicy"]["Name"] == "on-failure"
    assert CHECKPOINT_EVERY < STEPS and first[0] < STEPS, "training finished before the kill: nothing to resume"
    os.kill(master.attrs["State"]["Pid"], signal.SIGKILL)  # the node dies (an OOM kill looks the same)
    _wait_for(lambda: _restarts(client, job) or None, deadline_s=120)
    runner.join(timeout=1200)
    assert not runner.is_alive()
    (result,) = outcome
    assert not isinstance(result, BaseException), result
    assert result.status == "Succeeded" and result.backend == "docker"
    logs = capsys.readouterr().out
    resumed = [int(w.split("=")[1]) for line in logs.splitlines() if "resumed from committed checkpoint" in line
               for w in line.split() if w.startswith("step=")]
    assert resumed and resumed[0] >= first[0] and resumed[0] % CHECKPOINT_EVERY == 0, logs[-3000:]
    assert checkpoint.latest_checkpoint(args.value("save_dir"))[0] == STEPS  # ends at exactly num_train_steps
    assert f"step={STEPS + 1}" not in logs
    assert storage.read_json(f"{args.value('model_dir')}/export.json")  # the chief exported the model
    assert client.containers.list(all=True, filters={"label": f"recap.ai/run-id={job}"}) == []  # cleaned up


def _run(spec: LaunchSpec, args: TrainerArgs):
    try:
        return launch(spec, args, backend="docker")
    except BaseException as exc:  # handed to the test thread
        return exc


def _failed(outcome: list[object]) -> BaseException | None:
    """The launch ended before it should have: its exception, so the test stops waiting."""
    return next((o for o in outcome if isinstance(o, BaseException)), None)


def _restarts(client, job: str) -> int:
    return sum(c.attrs.get("RestartCount", 0) for c in client.containers.list(
        all=True, filters={"label": f"recap.ai/run-id={job}"}))


def _wait_for(probe, deadline_s: float):
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        value = probe()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"not reached within {deadline_s}s")


@pytest.mark.integration
def test_a_missing_image_fails_in_one_line_naming_it(docker_host):
    from components.common.errors import ConfigError

    with pytest.raises(ConfigError) as info:
        launch(two_node_spec("recap-train-cpu:no-such-tag", job_name=f"recap-train-{uuid.uuid4().hex[:8]}"),
               trainer_args(), backend="docker")
    assert "recap-train-cpu:no-such-tag is not on the Docker engine" in str(info.value)
    assert "\n" not in str(info.value)
