"""The built images: each starts its step, as uid 10001 or any other uid on a read-only root,
carries only what its step imports, and holds no credential in any layer."""

from __future__ import annotations

import json
import re
import subprocess
import tarfile

import pytest

from tests.docker.conftest import docker

pytestmark = [pytest.mark.integration, pytest.mark.timeout(3600)]

# target -> the `recap` step its ENTRYPOINT runs
STEPS = {"validate": "validate", "convert": "convert", "launch": "launch", "evaluate": "evaluate",
         "train-cpu": "train"}
# Packages a step never imports, so its image must not carry them.
ABSENT = {"validate": ("torch", "tensorflow"), "convert": ("torch", "tensorflow"),
          "launch": ("torch", "tensorflow")}
OTHER_UID = "4242:4242"

# What a leaked credential looks like, in a file of any layer or in the image's history/config:
# a PEM private key with its base64 body (libraries that parse keys carry only the marker), in a
# file or JSON-escaped in a service-account key, and the token formats of the usual clouds.
SECRET_CONTENT = re.compile(
    rb"-----BEGIN (?:RSA |EC |DSA |OPENSSH |ENCRYPTED )?PRIVATE KEY-----(?:\r?\n|\\n)[A-Za-z0-9+/=]{40}"
    rb"|\bAKIA[0-9A-Z]{16}\b"
    rb"|\bgh[pousr]_[A-Za-z0-9]{36}\b"
    rb"|\bxox[abprs]-[A-Za-z0-9-]{10,}"
    rb"|\bya29\.[A-Za-z0-9_-]{20,}"
    rb"|\"refresh_token\"\s*:\s*\"1//"
)
SECRET_NAMES = re.compile(
    r"(?:^|/)(?:\.netrc|\.pypirc|\.git-credentials|\.env|id_(?:rsa|dsa|ecdsa|ed25519)"
    r"|application_default_credentials\.json|credentials\.json|\.docker/config\.json|[^/]*key[^/]*\.json)$"
)
SECRET_SETTINGS = re.compile(r"(?i)(password|passwd|secret|token|api_?key|credential)s?\s*[=:]\s*\S")
SCAN_LIMIT = 8 * 2**20  # larger files are libraries and data; their names are still checked
# Scanned: every file up to SCAN_LIMIT but ELF binaries. A baked credential is a text file.
# Every match of SECRET_CONTENT contains one of these literals (case-sensitive, as the pattern).
# Checking them first (bytes `in`, ~10x faster than the pattern over a layer's gigabytes) runs
# the pattern only on the few files that could match: the same files are found.
SECRET_ANCHORS = (b"PRIVATE KEY-----", b"AKIA", b"ghp_", b"gho_", b"ghu_", b"ghs_", b"ghr_", b"xox", b"ya29.",
                  b'"refresh_token"')


def holds_secret(content: bytes) -> bool:
    return any(anchor in content for anchor in SECRET_ANCHORS) and SECRET_CONTENT.search(content) is not None


SAMPLE_SECRETS = [b"-----BEGIN RSA PRIVATE KEY-----\n" + b"A" * 40, b"-----BEGIN PRIVATE KEY-----\\n" + b"B" * 40,
                  b"AKIA" + b"Z" * 16, *(b"gh%c_" % c + b"a" * 36 for c in b"pousr"),
                  *(b"xox%c-" % c + b"1" * 10 for c in b"abprs"), b"ya29." + b"x" * 20,
                  b'"refresh_token": "1//']


@pytest.mark.parametrize("secret", SAMPLE_SECRETS, ids=lambda s: s[:12].decode())
def test_the_scan_finds_each_kind_of_credential(secret):
    """Each alternative of the pattern is found through the prefilter, inside other text; cut short, none is."""
    assert holds_secret(b"x = 1\n" + secret + b"\ny = 2\n")
    assert not holds_secret(b"x = 1\n" + secret[:-4] + b"\ny = 2\n")


@pytest.mark.parametrize("target", sorted(STEPS))
def test_help_exits_0_and_names_the_step(images, target):
    result = docker("run", "--rm", "--network", "none", images[target], "--help")
    assert f"usage: recap {STEPS[target]}" in result.stdout


@pytest.mark.parametrize("target", sorted(STEPS))
def test_runs_as_uid_10001(images, target):
    config = json.loads(docker("image", "inspect", images[target]).stdout)[0]["Config"]
    assert config["User"] == "10001:10001"
    assert docker("run", "--rm", "--network", "none", "--entrypoint", "id", images[target]).stdout.startswith(
        "uid=10001")


@pytest.mark.parametrize("target", sorted(STEPS))
def test_works_as_another_uid_on_a_read_only_root(images, target):
    """Imports everything the step needs (torch, TensorFlow, kfp...) where nothing but /tmp is writable."""
    modules = {"validate": "components.validate.validator, kfp.dsl.executor_main",
               "convert": "components.convert.shard, components.convert.example_wire, kfp.dsl.executor_main",
               "launch": "components.launch.cluster, components.launch.docker, docker, kfp.dsl.executor_main",
               "evaluate": "components.evaluate.evaluator, components.records.reader, kfp.dsl.executor_main",
               "train-cpu": "components.train.loop, components.train.tensorboard, torch.distributed.run"}[target]
    run = ["run", "--rm", "--network", "none", "--user", OTHER_UID, "--read-only", "--tmpfs", "/tmp"]
    docker(*run, images[target], "--help")
    probe = f"import {modules}; import os; print(os.getuid())"
    assert docker(*run, "--entrypoint", "python", images[target], "-c", probe).stdout.strip().endswith("4242")


@pytest.mark.parametrize("target", sorted(ABSENT))
def test_carries_no_package_its_step_does_not_import(images, target):
    probe = "import importlib.util as u, sys; print(' '.join(m for m in sys.argv[1:] if u.find_spec(m)))"
    found = docker("run", "--rm", "--network", "none", "--entrypoint", "python", images[target], "-c", probe,
                   *ABSENT[target]).stdout.split()
    assert found == [], f"{target} carries {found}"


def test_no_credential_in_any_layer_history_or_config(images):
    """`docker save` of every image (shared layers once), each layer's files scanned."""
    tags = sorted(set(images.values()))
    for tag in tags:
        inspect = json.loads(docker("image", "inspect", tag).stdout)[0]
        settings = " ".join(inspect["Config"].get("Env") or []) + json.dumps(inspect["Config"].get("Labels"))
        assert not SECRET_SETTINGS.search(settings), f"{tag}: {settings}"
        history = docker("history", "--no-trunc", "--format", "{{.CreatedBy}}", tag).stdout
        for line in history.splitlines():
            assert not SECRET_SETTINGS.search(line) and not SECRET_CONTENT.search(line.encode()), f"{tag}: {line}"
    found, scanned = [], 0
    save = subprocess.Popen(["docker", "save", *tags], stdout=subprocess.PIPE)
    with tarfile.open(fileobj=save.stdout, mode="r|") as outer:
        for member in outer:
            if not member.isfile():
                continue
            data = outer.extractfile(member)
            if not (member.name.endswith("layer.tar") or member.name.startswith("blobs/")):
                continue
            try:
                with tarfile.open(fileobj=data, mode="r|") as layer:
                    for entry in layer:
                        if SECRET_NAMES.search(entry.name):
                            found.append(f"{member.name}: {entry.name}")
                        if entry.isfile() and entry.size <= SCAN_LIMIT:
                            scanned += 1
                            content = layer.extractfile(entry).read()
                            # compiled libraries carry their own public self-test keys (libgnutls)
                            if not content.startswith(b"\x7fELF") and holds_secret(content):
                                found.append(f"{member.name}: {entry.name}")
            except tarfile.ReadError:  # a config or manifest blob, not a layer
                continue
    assert save.wait() == 0
    assert scanned > 10_000, "the layers were not read"
    assert found == []
