"""README's `docker run` block, run as written (by a non-root user in the docker group), gives
the same outputs as the same `recap` commands from the venv: byte-identical shards, the same
statistics, the same trained model and the same metrics."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.docker.build_files import REPO

pytestmark = [pytest.mark.integration, pytest.mark.timeout(3600)]

SECTION = "## Running one step with `docker run`"
IMAGE = re.compile(r"ghcr\.io/recap-pipeline/recap-([a-z-]+):0\.1\.0")
USER = 4242  # a laptop user in the docker group, not root and not the images' 10001
RECAP = Path(sys.executable).parent / "recap"


def readme_block() -> str:
    """The code block of the README section that runs the steps (the one with `$STEP`)."""
    text = (REPO / "README.md").read_text()
    section = text[text.index(SECTION):]
    section = section[: section.index("\n## ", len(SECTION))]
    blocks = re.findall(r"```bash\n(.*?)```", section, re.S)
    (block,) = [b for b in blocks if "$STEP " in b]
    return block


def step_commands(block: str) -> list[tuple[str, list[str]]]:
    """(image target, arguments after the image) of every `$STEP IMAGE ...` line."""
    out = []
    for line in block.replace("\\\n", " ").splitlines():
        if line.startswith("$STEP "):
            words = shlex.split(line)
            out.append((IMAGE.fullmatch(words[1]).group(1), words[2:]))
    return out


def test_readme_block_runs_every_cpu_step_image():
    targets = [target for target, _ in step_commands(readme_block())]
    assert targets == ["validate", "convert", "train-cpu", "evaluate"]


@pytest.fixture(scope="module")
def runs(images, tmp_path_factory):
    """The README block run as written in one directory, the same steps from the venv in another."""
    block = readme_block()
    # Outside pytest's (root-only) temporary root, so the user can reach it.
    containers = Path(tempfile.mkdtemp(prefix="recap-readme-", dir="/tmp"))
    venv = tmp_path_factory.mktemp("venv")
    socket_gid = os.stat(os.environ["DOCKER_HOST"].removeprefix("unix://")).st_gid
    # The `recap data generate` line runs from the venv (which that user cannot read here), the
    # docker lines as written, as the user.
    generate = "\n".join(line for line in block.splitlines() if line.startswith("recap "))
    subprocess.run(["bash", "-euo", "pipefail", "-c", generate], cwd=containers, check=True, capture_output=True,
                   env={**os.environ, "PATH": f"{RECAP.parent}:{os.environ['PATH']}"}, timeout=600)
    for path in [containers, *containers.rglob("*")]:
        os.chown(path, USER, USER)
    script = IMAGE.sub(lambda m: images[m.group(1)], "\n".join(
        line for line in block.replace("\\\n", " ").splitlines() if not line.startswith("recap ")))
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(containers), "DOCKER_HOST": os.environ["DOCKER_HOST"]}
    as_user = ["setpriv", f"--reuid={USER}", f"--regid={USER}", f"--groups={socket_gid}"]
    data = venv / "runs" / "local"
    shutil.copytree(containers / "runs" / "local" / "raw", data / "raw")
    # The containers and the venv steps side by side: each chain runs one step at a time, mostly on
    # one core, and they share nothing but the generated files (copied above). The containers' output
    # goes to a file, so a full pipe never stalls them.
    log = venv / "containers.log"
    with open(log, "w") as out, subprocess.Popen([*as_user, "bash", "-euo", "pipefail", "-c", script],
                                                 cwd=containers, env=env, stdout=out, stderr=out) as in_containers:
        try:
            for target, args in step_commands(block):
                step = "train" if target == "train-cpu" else target
                args = [a.replace("/data", str(data)) for a in args]
                done = subprocess.run([str(RECAP), step, *args], cwd=REPO, capture_output=True, text=True,
                                      timeout=900)
                assert done.returncode == 0, f"venv {step}: {done.stderr[-3000:]}"
            in_containers.wait(timeout=1800)
        finally:
            if in_containers.poll() is None:
                in_containers.kill()
    assert in_containers.returncode == 0, log.read_text()[-4000:]
    yield containers / "runs" / "local", data
    shutil.rmtree(containers, ignore_errors=True)


def files(root: Path, pattern: str) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.glob(pattern)) if p.is_file()}


def test_files_belong_to_the_user_who_ran_docker(runs):
    containers, _ = runs
    owners = {p.stat().st_uid for p in containers.rglob("*")}
    assert owners == {USER}


def test_shards_are_byte_identical(runs):
    containers, venv = runs
    shards = files(containers / "tfrecords", "*/*.tfrecord.gz")
    assert len(shards) >= 2
    assert shards == files(venv / "tfrecords", "*/*.tfrecord.gz")


def test_validation_statistics_and_anomalies_are_the_same(runs):
    containers, venv = runs
    for name in ("statistics.json", "anomalies.json"):
        ours, theirs = (json.loads((d / "validation" / name).read_text()) for d in (containers, venv))
        assert _without_paths(ours) == _without_paths(theirs), name


def test_the_trained_model_and_its_metrics_are_the_same(runs):
    containers, venv = runs
    model = files(containers / "model", "**/*")
    assert model and model.keys() == files(venv / "model", "**/*").keys()
    ours, theirs = (json.loads((d / "evaluation" / "metrics.json").read_text()) for d in (containers, venv))
    assert _without_paths(ours) == _without_paths(theirs)
    assert ours["tasks"], "metrics per task"


# When and how fast, not what: they differ between any two runs.
VOLATILE = {"created_at", "seconds", "examples_per_s", "rows_per_s", "mb_per_s"}


def _without_paths(value):
    """The two runs read from different directories (/data in the container); drop path strings
    and the run's timings."""
    if isinstance(value, dict):
        return {k: _without_paths(v) for k, v in value.items() if not _is_path(v) and k not in VOLATILE}
    if isinstance(value, list):
        return [_without_paths(v) for v in value if not _is_path(v)]
    return value


def _is_path(value) -> bool:
    return isinstance(value, str) and ("/" in value) and (value.startswith("/") or "://" in value)
