"""The docker backend's tf.data service: the exact containers it asks the engine for, and that they
are removed when the job succeeds, fails, times out or is interrupted (Ctrl-C), whatever the
cleanup policy.

No engine here: a recording stand-in for docker-py's client answers the calls the backend makes
(images.get, info, containers.list/run, container reload/logs/remove) and plays the master's
container state per scenario. That the same containers really serve a training run on an engine
is tests/docker's part (they build the images).
"""

from __future__ import annotations

import pytest

from components.launch import LaunchSpec
from components.launch import docker as docker_backend
from components.launch import run as launch
from components.launch.docker import REPLICA_LABEL
from components.launch.docker_service import JOURNAL_DIR
from components.launch.pytorchjob import RUN_ID_LABEL
from components.launch.spec import LaunchTimeout, TrainingFailed
from components.trainer_command.flags import TrainerArgs

JOB = "recap-train-dk"
IMAGE = "recap-train:test"
GiB = 2**30


class FakeContainer:
    def __init__(self, engine: FakeEngine, name: str) -> None:
        self.engine, self.name, self.attrs, self.reloads, self.removed = engine, name, {}, 0, False
        self.logged = False

    def reload(self) -> None:
        self.reloads += 1
        status, code, restarts = self.engine.state(self)
        self.attrs = {"State": {"Status": status, "ExitCode": code}, "RestartCount": restarts}

    def logs(self, **_):
        if self.removed:
            raise RuntimeError("no such container")
        lines, self.logged = ([] if self.logged else [f"{self.name} up\n".encode()]), True
        return iter(lines)

    def remove(self, force: bool = False) -> None:
        self.engine.removed.append((self.name, force))
        self.removed = True


class FakeEngine:
    """docker-py's DockerClient as far as the backend uses it. `scenario` is what the master does:
    `succeeds` (exits 0 on its 3rd poll), `crashes` (restarted on every poll), `runs`, `interrupt`
    (Ctrl-C arrives during its 2nd poll)."""

    def __init__(self, scenario: str) -> None:
        self.scenario = scenario
        self.runs: list[tuple[str, dict]] = []
        self.removed: list[tuple[str, bool]] = []
        self.images = self
        self.containers = self

    # images.get / info / containers.list / containers.run
    def get(self, name: str) -> object:
        return object()

    def info(self) -> dict:
        return {"NCPU": 2}

    def list(self, **_) -> list:
        return []

    def run(self, image: str, **kwargs) -> FakeContainer:
        self.runs.append((image, kwargs))
        return FakeContainer(self, kwargs["name"])

    def state(self, container: FakeContainer) -> tuple[str, int, int]:
        if not container.name.endswith("-master-0"):
            return "running", 0, 0
        if self.scenario == "succeeds" and container.reloads >= 3:
            return "exited", 0, 0
        if self.scenario == "crashes":
            return "running", 0, container.reloads
        if self.scenario == "interrupt" and container.reloads == 2:
            raise KeyboardInterrupt
        return "running", 0, 0


def start(monkeypatch, scenario: str, **spec_values):
    engine = FakeEngine(scenario)
    monkeypatch.setattr(docker_backend, "docker_client", lambda *a, **k: engine)
    monkeypatch.setattr(docker_backend, "POLL_S", 0.01)
    spec = LaunchSpec(**{"job_name": JOB, "image": IMAGE, "num_workers": 2, "data_service_workers": 2,
                         "env": (("STORAGE_EMULATOR_HOST", "http://127.0.0.1:9023"),), "timeout_s": 10.0,
                         "backoff_limit": 1, **spec_values})
    args = TrainerArgs.of("configs/local.yaml", train_data="gs://b/train", validation_data="gs://b/eval",
                          save_dir="gs://b/run", model_dir="gs://b/model")
    return engine, lambda: launch(spec, args, backend="docker")


def service_names() -> list[str]:
    return [f"{JOB}-dispatcher", f"{JOB}-data-worker-0", f"{JOB}-data-worker-1"]


def test_the_dispatcher_and_workers_are_started_first_with_exactly_these_arguments(monkeypatch):
    engine, go = start(monkeypatch, "succeeds")
    assert go().status == "Succeeded"
    names = [kwargs["name"] for _, kwargs in engine.runs]
    assert names == [*service_names(), f"{JOB}-master-0", f"{JOB}-worker-0"]
    (_, dispatcher), (_, worker0), (_, worker1) = engine.runs[:3]
    port = int(dispatcher["command"][0].removeprefix("--port="))
    env = {"STORAGE_EMULATOR_HOST": "http://127.0.0.1:9023", "PYTHONUNBUFFERED": "1"}
    assert engine.runs[0] == (IMAGE, dict(
        command=[f"--port={port}", f"--journal-dir={JOURNAL_DIR}"], entrypoint=["recap", "data-service", "dispatcher"],
        environment=env, name=f"{JOB}-dispatcher", hostname=f"{JOB}-dispatcher", extra_hosts={},
        network_mode="host", restart_policy={"Name": "on-failure"}, detach=True, nano_cpus=500_000_000,
        mem_limit=GiB, shm_size=GiB, labels={RUN_ID_LABEL: JOB, REPLICA_LABEL: "dispatcher"}))
    worker_ports = []
    for index, (image, worker) in enumerate((engine.runs[1], engine.runs[2])):
        worker_port = int(worker["command"][1].removeprefix("--port="))
        worker_ports.append(worker_port)
        name = f"{JOB}-data-worker-{index}"
        assert (image, worker) == (IMAGE, dict(
            command=[f"--dispatcher=grpc://127.0.0.1:{port}", f"--port={worker_port}", "--worker-host=127.0.0.1"],
            entrypoint=["recap", "data-service", "worker"], environment=env, name=name, hostname=name,
            extra_hosts={}, network_mode="host", restart_policy={"Name": "on-failure"}, detach=True,
            nano_cpus=2_000_000_000, mem_limit=4 * GiB, shm_size=4 * GiB,
            labels={RUN_ID_LABEL: JOB, REPLICA_LABEL: f"data-worker-{index}"}))
    for _, replica in engine.runs[3:]:
        assert f"--data_service_dispatcher=grpc://127.0.0.1:{port}" in replica["command"]
        assert "--data_service_connect_timeout_s=300.0" in replica["command"]
        assert replica["network_mode"] == "host"
    master_port = int(engine.runs[3][1]["environment"]["MASTER_PORT"])
    assert len({port, *worker_ports, master_port}) == 4, "every process on the host's loopback has its own port"
    assert sorted(engine.removed) == sorted((name, True) for name in [*service_names(), f"{JOB}-master-0",
                                                                      f"{JOB}-worker-0"])


@pytest.mark.parametrize("scenario, error", [("crashes", TrainingFailed), ("runs", LaunchTimeout),
                                             ("interrupt", KeyboardInterrupt)])
def test_the_service_is_removed_when_the_job_fails_times_out_or_is_interrupted(monkeypatch, scenario, error):
    engine, go = start(monkeypatch, scenario, timeout_s=0.3)
    with pytest.raises(error):
        go()
    removed = dict(engine.removed)
    assert all(removed.get(name) is True for name in service_names())


def test_a_kept_job_keeps_its_replicas_but_not_its_service(monkeypatch):
    engine, go = start(monkeypatch, "crashes", cleanup="on_success")
    with pytest.raises(TrainingFailed, match="backoffLimit"):
        go()
    assert sorted(name for name, _ in engine.removed) == sorted(service_names())


def test_no_service_without_data_service_workers(monkeypatch):
    engine, go = start(monkeypatch, "succeeds", data_service_workers=0)
    go()
    assert [kwargs["name"] for _, kwargs in engine.runs] == [f"{JOB}-master-0", f"{JOB}-worker-0"]
    assert not any("--data_service_dispatcher" in a for _, kwargs in engine.runs for a in kwargs["command"])
