"""The Docker engine and the built images, shared by every container test (session scope).

`docker/build.py` finds or starts the engine and builds the CPU images (tags are a hash of the
build context, so an unchanged tree reuses the images `make test` built a moment ago). Where no
engine can be had at all (not root, no dockerd) the container tests are skipped with a loud
reason, except in CI, where they fail: CI runs on a machine kind that always has one.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.docker.build_files import REPO

BUILD = REPO / "docker" / "build.py"


def build(*args: str, timeout: float = 3600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(BUILD), *args], capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="session")
def docker_host() -> str:
    result = build("engine", timeout=600)
    if result.returncode != 0:
        reason = f"NO DOCKER ENGINE, container tests not run: {result.stderr.strip()}"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    host = result.stdout.strip()
    os.environ["DOCKER_HOST"] = host
    return host


@pytest.fixture(scope="session")
def images(docker_host: str) -> dict[str, str]:
    """Build target -> local tag of every CPU image."""
    result = build("images")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def docker(*args: str, timeout: float = 600, check: bool = True, **kwargs) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout, **kwargs)
    if check:
        assert result.returncode == 0, f"docker {' '.join(args[:3])}...: {result.stderr[-2000:]}"
    return result
