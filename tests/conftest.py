"""Shared fixtures: a real GCS emulator on loopback, and a fresh bucket per test."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from components.common import storage
from components.launch.local import free_port

REPO_ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent


def wait_for_http(url: str, deadline_s: float = 30.0) -> None:
    """Poll until `url` answers at all (any HTTP status), or fail after the deadline."""
    end = time.monotonic() + deadline_s
    while True:
        try:
            urllib.request.urlopen(url, timeout=1)  # noqa: S310 - loopback only
            return
        except urllib.error.HTTPError:
            return
        except OSError:
            if time.monotonic() > end:
                raise
            time.sleep(0.1)


@pytest.fixture(scope="session")
def gcs_emulator() -> Iterator[str]:
    """A gcp-storage-emulator process on 127.0.0.1 (in memory); yields its base URL."""
    port = free_port()
    proc = subprocess.Popen(
        [str(VENV_BIN / "gcp-storage-emulator"), "start", "--host", "127.0.0.1",
         "--port", str(port), "--in-memory", "-q"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(f"{url}/storage/v1/b")
    except OSError as exc:
        proc.kill()
        raise RuntimeError(f"gcp-storage-emulator did not start: {proc.stderr.read().decode()[-2000:]}") from exc
    previous = os.environ.get("STORAGE_EMULATOR_HOST")
    os.environ["STORAGE_EMULATOR_HOST"] = url
    storage._clients.clear()
    try:
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        if previous is None:
            os.environ.pop("STORAGE_EMULATOR_HOST", None)
        else:
            os.environ["STORAGE_EMULATOR_HOST"] = previous
        storage._clients.clear()


def create_bucket(name: str) -> str:
    storage.gcs_client().create_bucket(name)
    return f"gs://{name}"


@pytest.fixture
def gcs_bucket(gcs_emulator: str) -> str:
    """A fresh, empty bucket on the emulator: `gs://test-<random>`."""
    return create_bucket(f"test-{uuid.uuid4().hex[:12]}")


@pytest.fixture(params=["local", "gcs"])
def storage_root(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The same test body against a local directory and against the GCS emulator."""
    if request.param == "local":
        return str(tmp_path / "root")
    return request.getfixturevalue("gcs_bucket") + "/root"
