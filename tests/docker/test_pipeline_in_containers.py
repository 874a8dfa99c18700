"""The whole DAG with every step in its own container (`recap pipeline run --runner docker`),
data_root on the GCS emulator: the same results as the venv run, each step in the image the
compiled YAML names; and the one-line failures of a missing engine, a failed build and a step
whose container exits non-zero."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.docker.build_files import REPO, build_script
from tests.docker.conftest import BUILD

pytestmark = [pytest.mark.integration, pytest.mark.timeout(1800)]

RECAP = Path(sys.executable).parent / "recap"
STEPS = "40"


def image_params(images: dict[str, str]) -> list[str]:
    named = {"validate_image": "validate", "convert_image": "convert", "evaluate_image": "evaluate",
             "launch_image": "launch", "train_image": "train-cpu"}
    return [f"--param={name}={images[target]}" for name, target in named.items()]


def pipeline_run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(RECAP), "pipeline", "run", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=1500, env={**os.environ, **(env or {})})


@pytest.fixture(scope="module")
def raw(tmp_path_factory) -> str:
    out = tmp_path_factory.mktemp("raw")
    subprocess.run([str(RECAP), "data", "generate", "--schema", "local", "--rows", "6000", "--files", "2",
                    "--seed", "5", "--out", str(out)], check=True, capture_output=True, timeout=300)
    return str(out)


@pytest.fixture(scope="module")
def runs(images, raw, gcs_emulator, tmp_path_factory):
    """The DAG in containers (root on the emulator) and in the venv (`make run`'s runner)."""
    from tests.conftest import create_bucket

    bucket = create_bucket("dag-in-containers")
    # Side by side: each DAG runs one step at a time, mostly on one core, so on two cores the venv
    # run costs no wall time next to the container run. They share nothing but the emulator.
    with ThreadPoolExecutor(max_workers=2) as pool:
        containers = pool.submit(pipeline_run, "--runner", "docker", "--raw", raw, "--root", f"{bucket}/run",
                                 "--num-train-steps", STEPS, *image_params(images))
        venv = pool.submit(pipeline_run, "--raw", raw, "--root", str(tmp_path_factory.mktemp("venv")),
                           "--num-train-steps", STEPS)
        containers, venv = containers.result(), venv.result()
    assert containers.returncode == 0, containers.stderr[-5000:]
    assert venv.returncode == 0, venv.stderr[-3000:]
    return containers, venv


def test_every_step_ran_in_the_image_its_task_names(runs, images):
    containers, _ = runs
    result = json.loads(containers.stdout)
    assert result["succeeded"] and result["model_uri"].startswith("gs://dag-in-containers/run/")
    log = containers.stderr
    # kfp.local prints each task's resolved executor input; the launch image ran train and push/not-blessed
    for target in ("validate", "convert", "evaluate", "launch", "train-cpu"):
        assert images[target] in log, f"{target}: {images[target]} never named in the run"
    assert "started recap-train-" in log and images["train-cpu"] in log  # the training pod, in its container


def test_same_metrics_as_the_venv_run(runs):
    containers, venv = runs
    ours, theirs = (json.loads(r.stdout) for r in (containers, venv))
    from components.common import storage

    metrics = [storage.read_json(r["metrics"]) for r in (ours, theirs)]
    assert metrics[0]["tasks"] == metrics[1]["tasks"]
    assert ours["blessed"] == theirs["blessed"]


def failure_line(stderr: str, step: str) -> str:
    """The step's one error line (the same line again for each retry kfp.local makes)."""
    lines = {x for x in stderr.splitlines() if x.startswith(f"error: step {step} ")}
    assert len(lines) == 1, lines
    return lines.pop()


def test_a_failing_step_is_named_in_one_line_and_nothing_after_it_runs(images, tmp_path):
    """No Parquet files: validate records the anomaly, the gate's container exits 1 (no retries)."""
    (tmp_path / "empty").mkdir()
    result = pipeline_run("--runner", "docker", "--raw", str(tmp_path / "empty"), "--root", str(tmp_path / "root"),
                          *image_params(images))
    assert result.returncode == 1
    line = failure_line(result.stderr, "validation-gate")
    assert images["launch"] in line and "exit code 1" in line and "no Parquet files" in line
    outcome = json.loads(result.stdout)
    assert outcome["failed_tasks"][0] == "validation-gate"
    assert not (Path(outcome["run_dir"]) / "convert").exists()  # nothing after the gate ran


def test_a_missing_image_fails_its_step_without_a_pull(images, raw, tmp_path):
    """The first step's image is missing: it fails at once (no validation of the data first)."""
    missing = {**images, "validate": "recap-validate:never-built"}
    result = pipeline_run("--runner", "docker", "--raw", raw, "--root", str(tmp_path / "root"),
                          *image_params(missing))
    assert result.returncode == 1
    assert "recap-validate:never-built is not on the Docker engine" in failure_line(result.stderr, "validate")
    assert json.loads(result.stdout)["failed_tasks"][0] == "validate"


def test_no_engine_is_one_line_and_exit_2(raw, tmp_path):
    env = {"DOCKER_HOST": f"unix://{tmp_path}/no.sock"}
    result = pipeline_run("--runner", "docker", "--raw", raw, "--root", str(tmp_path / "root"), env=env)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].count("no Docker engine answers") == 1
    built = subprocess.run([sys.executable, str(BUILD), "engine"], capture_output=True, text=True,
                           env={**os.environ, **env}, timeout=60)
    assert built.returncode == 1 and built.stderr.strip() == f"error: engine: DOCKER_HOST={env['DOCKER_HOST']} does not answer"


def test_a_failed_build_names_the_image_in_one_line(docker_host, tmp_path):
    root = tmp_path / "checkout"
    for rel in build_script.build_context() | {"docker/Dockerfile", "docker/Dockerfile.dockerignore"}:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / rel, root / rel)
    dockerfile = root / "docker" / "Dockerfile"
    dockerfile.write_text(dockerfile.read_text().replace(
        "RUN python3 -m compileall", "RUN python3 -c 'raise SystemExit(\"broken on purpose\")' && python3 -m compileall"))
    with pytest.raises(build_script.BuildError) as info:
        build_script.build_images(("validate",), root)
    message = str(info.value)
    assert "\n" not in message and message.startswith("image recap-validate:local-") and "build failed" in message
    assert not build_script._image_id(message.split()[1])  # nothing tagged
