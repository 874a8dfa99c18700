"""`recap pipeline run --runner docker`: the compiled DAG with every step in the container its YAML names.

kfp.local walks the compiled DAG as for `make run` (dependencies, the exit handler, the blessing
condition, outputs passed between tasks); only the task handler differs. For each task it
- resolves the executor's image as the KFP backend's driver does (pipeline/backend_resolve.py:
  our images are whole-image parameters such as `validate_image`, read from the task's inputs);
- runs the task's command and args in that image on the engine (never pulling: a missing image
  fails the step), on the host network so a GCS emulator on 127.0.0.1 is reachable, as the
  invoking user, with kfp.local's pipeline root and the run's local paths mounted at the same
  paths, STORAGE_EMULATOR_HOST passed through, and for the steps that start or delete a training
  job the engine's socket, so `train_backend=docker` starts the PyTorchJob's pods as containers;
- reports the container's real exit code, and on failure one line naming the step, the image
  and the last line the step printed (kfp.local then publishes nothing of that step).
Why not kfp's own DockerRunner: it uses the image string verbatim (a `{{$.inputs.parameters[...]}}`
placeholder is not an image), pulls any image it does not find, runs every step with one set of
options on the default bridge network (this engine has none, and only the training steps should
get the socket), and reports a container that was auto-removed before it could be waited on as
a success.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from components.common.errors import ConfigError

SOCKET_IN_CONTAINER = "/var/run/docker.sock"
# Steps that create or delete the training job (components: train, delete_training_job).
TRAINING_JOB_STEPS = frozenset({"train", "delete_training_job"})
PASSED_ENV = ("STORAGE_EMULATOR_HOST", "GOOGLE_APPLICATION_CREDENTIALS")


def docker_client() -> Any:
    from components.launch.docker import docker_client as client

    return client("pipeline run --runner docker")


def _executor_input(command: list[str]) -> dict[str, Any]:
    return json.loads(command[command.index("--executor_input") + 1])


def _task_name(executor_input: dict[str, Any]) -> str:
    """kfp.local's output file is <pipeline root>/<run>/<task>/executor_output.json."""
    return Path(executor_input["outputs"]["outputFile"]).parent.name


def _function(command: list[str]) -> str:
    return command[command.index("--function_to_execute") + 1] if "--function_to_execute" in command else ""


class ContainerTask:
    """A kfp.local task handler (same constructor and `run` as kfp's) running one step's container."""

    mounts: tuple[str, ...] = ()  # local paths the run reads or writes, mounted at the same path

    def __init__(self, image: str, full_command: list[str], pipeline_root: str, runner: Any,
                 env_vars: dict[str, str] | None = None) -> None:
        self.image, self.command, self.pipeline_root, self.env = image, list(full_command), pipeline_root, env_vars or {}

    def run(self) -> Any:
        from kfp.local import status

        from pipeline.backend_resolve import resolve_pod_spec_field

        executor_input = _executor_input(self.command)
        task = _task_name(executor_input)
        parameters = executor_input.get("inputs", {}).get("parameterValues", {})
        image = resolve_pod_spec_field(self.image, parameters, where=f"step {task}")
        code, last = self.run_container(task, image)
        if code != 0:
            # Not print(): kfp.local indents what steps print; this line must stand on its own.
            sys.stderr.write(f"error: step {task} (image {image}) failed with exit code {code}: {last}\n")
            sys.stderr.flush()
            return status.Status.FAILURE
        return status.Status.SUCCESS

    def run_container(self, task: str, image: str) -> tuple[int, str]:
        import docker

        client = docker_client()
        try:
            client.images.get(image)
        except docker.errors.ImageNotFound:
            return 125, f"image {image} is not on the Docker engine (nothing is pulled; build it, e.g. make images-local)"
        volumes = {p: {"bind": p, "mode": "rw"} for p in {self.pipeline_root, *self.mounts}}
        env = {**self.env, **{k: os.environ[k] for k in PASSED_ENV if os.environ.get(k)}}
        if env.get("GOOGLE_APPLICATION_CREDENTIALS"):
            volumes[env["GOOGLE_APPLICATION_CREDENTIALS"]] = {"bind": env["GOOGLE_APPLICATION_CREDENTIALS"], "mode": "ro"}
        group_add = []
        if _function(self.command) in TRAINING_JOB_STEPS:
            socket = _engine_socket()
            volumes[socket] = {"bind": SOCKET_IN_CONTAINER, "mode": "rw"}
            env["DOCKER_HOST"] = f"unix://{SOCKET_IN_CONTAINER}"
            group_add = [os.stat(socket).st_gid]
        container = client.containers.run(
            image, entrypoint=self.command, command=[], environment=env, volumes=volumes, network_mode="host",
            user=f"{os.getuid()}:{os.getgid()}", group_add=group_add, detach=True,
            labels={"recap.ai/pipeline-task": task},
        )
        tail: collections.deque[str] = collections.deque(maxlen=1)
        try:
            pending = b""
            for chunk in container.logs(stream=True, follow=True):
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    text = line.decode(errors="replace")
                    print(text, flush=True)
                    if text.strip():
                        tail.append(text.strip())
            code = int(container.wait()["StatusCode"])
        finally:
            container.remove(force=True)
        return code, tail[0] if tail else "no output"


def _engine_socket() -> str:
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    if not host.startswith("unix://"):
        raise ConfigError(f"pipeline run --runner docker: the training steps need the engine's unix socket, not {host}")
    return host.removeprefix("unix://")


@contextlib.contextmanager
def container_tasks(mounts: tuple[str, ...]) -> Iterator[Any]:
    """kfp.local with every task in its container: a DockerRunner whose task handler is ContainerTask."""
    from kfp import local
    from kfp.local import docker_task_handler

    docker_client()  # a missing engine fails here, before any step
    handler = type("ContainerTaskWithMounts", (ContainerTask,), {"mounts": tuple(os.path.abspath(m) for m in mounts)})
    original = docker_task_handler.DockerTaskHandler
    docker_task_handler.DockerTaskHandler = handler
    try:
        yield local.DockerRunner()
    finally:
        docker_task_handler.DockerTaskHandler = original


# ------------------------------------------------------------------- make run-containers

BUCKET = "recap-local"


def main(argv: list[str] | None = None) -> int:
    """`make run-containers`: `make run`'s job with every step in its container and `data_root` on a
    GCS emulator on 127.0.0.1 (its files under --emulator-dir), the images this tree builds."""
    import argparse
    import subprocess
    import time
    import urllib.request

    from components.cli import main as recap
    from components.launch.local import free_port

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--raw", required=True)
    parser.add_argument("--emulator-dir", required=True)
    parser.add_argument("recap_args", nargs="*", help="more `recap pipeline run` arguments, e.g. --summary")
    args = parser.parse_args(argv)
    build = Path(__file__).resolve().parents[1] / "docker" / "build.py"
    os.environ["DOCKER_HOST"] = subprocess.run([sys.executable, str(build), "engine"], check=True,
                                               capture_output=True, text=True).stdout.strip()
    tags = json.loads(subprocess.run([sys.executable, str(build), "images"], check=True, capture_output=True,
                                     text=True).stdout)
    os.makedirs(args.emulator_dir, exist_ok=True)
    port = free_port()
    emulator = subprocess.Popen([str(Path(sys.executable).parent / "gcp-storage-emulator"), "start", "--host",
                                 "127.0.0.1", "--port", str(port), "--default-bucket", BUCKET, "-q"],
                                cwd=args.emulator_dir)
    os.environ["STORAGE_EMULATOR_HOST"] = url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"{url}/storage/v1/b", timeout=1)  # noqa: S310 - loopback only
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        images = {"validate_image": tags["validate"], "convert_image": tags["convert"],
                  "evaluate_image": tags["evaluate"], "launch_image": tags["launch"],
                  "train_image": tags["train-cpu"]}
        run_id = time.strftime("%Y%m%d-%H%M%S")
        return recap(["pipeline", "run", "--runner", "docker", "--raw", args.raw,
                      "--root", f"gs://{BUCKET}/runs/{run_id}",
                      *[f"--param={k}={v}" for k, v in images.items()], *args.recap_args])
    finally:
        emulator.terminate()
        emulator.wait(timeout=30)


if __name__ == "__main__":
    sys.exit(main())
