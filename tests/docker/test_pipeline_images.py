"""The images the compiled pipeline runs are exactly the ones docker/ builds, and each image
can run the kind of component the pipeline puts in it."""

from __future__ import annotations

import re

import pytest
import yaml

from pipeline import images
from tests.docker.build_files import DOCKER_DIR, REPO, bake_targets, parse_dockerfile
from tests.docker.test_dockerfiles import image_name, installed_extras

_IMAGE = re.compile(r"(?:^|[\s\"'/])(recap-[a-z]+)(?=[:@])")


@pytest.fixture(scope="module")
def compiled(tmp_path_factory) -> dict:
    """The pipeline compiled with its default options, as CI and `recap pipeline compile` do."""
    from pipeline.dag import CompileOptions, compile_pipeline

    options = CompileOptions(images=images.ImageSettings(registry=images.DEFAULT_REGISTRY, tag=images.DEFAULT_TAG))
    path = tmp_path_factory.mktemp("pipeline") / "recap_pipeline.yaml"
    compile_pipeline(str(path), options)
    return {"text": path.read_text(), "spec": [d for d in yaml.safe_load_all(path.read_text()) if d], "path": path}


def executors(compiled: dict) -> dict[str, dict]:
    """Each task's container with its image as the KFP backend resolves it (default parameters)."""
    from pipeline.backend_resolve import resolve

    resolved = resolve(compiled["path"], {"raw_data_uri": "gs://b/raw"})
    return {name: {"image": t.image, "command": list(t.command), "args": list(t.args)} for name, t in resolved.items()}


def test_compiled_pipeline_references_exactly_the_built_images(compiled):
    referenced = set(_IMAGE.findall(compiled["text"]))
    built = {image_name(tag) for t in bake_targets(env={}).values() for tag in t["tags"]}
    # recap-train-cpu: the CPU stand-in for recap-train, run by the train_image parameter's users
    assert referenced == built - {"recap-train-cpu"} == set(images.IMAGES)


def test_every_executor_image_comes_from_the_default_registry(compiled):
    for name, container in executors(compiled).items():
        image = container["image"]
        assert image.startswith(f"{images.DEFAULT_REGISTRY}/"), f"{name}: {image}"
        assert image_name(image) in images.IMAGES


def test_images_running_python_components_carry_kfp(compiled):
    """KFP replaces the ENTRYPOINT with `python3 -m kfp.dsl.executor_main` and does not install
    kfp at run time, so those images must have the `pipeline` extra (kfp) in their venv."""
    stages = parse_dockerfile(DOCKER_DIR / "Dockerfile")
    targets = {image_name(t["tags"][0]): t["target"] for t in bake_targets(env={}).values()}
    python_images = {image_name(c["image"]) for c in executors(compiled).values()
                     if "kfp.dsl.executor_main" in " ".join(c.get("command", []) + c.get("args", []))}
    assert python_images, "expected Python-function components in the compiled pipeline"
    for image in python_images:
        stage = stages[targets[image]]
        assert "pipeline" in installed_extras(stages, targets[image]), f"{image}: no kfp in the image"
        assert stage.env()["PATH"].startswith("/opt/venv/bin:"), f"{image}: python3 must be the venv's"
        # KFP's launcher stages artifacts under /gcs, /minio, /s3: a non-root user needs them made
        runs = " ".join(rest for s in stage.chain() for kw, rest in s.instructions if kw == "RUN")
        assert re.search(r"mkdir -p /gcs /minio /s3 && chmod 1777 /gcs /minio /s3", runs), image


def test_relative_config_defaults_of_the_pipeline_resolve_inside_the_images(compiled):
    """A default such as train_config="configs/prod.yaml" reaches the trainer pod as a relative
    path; the images' WORKDIR holds configs/ so it opens the same file as in a checkout."""
    (spec,) = [d for d in compiled["spec"] if "root" in d]
    defaults = {name: p.get("defaultValue") for name, p in spec["root"]["inputDefinitions"]["parameters"].items()}
    relative = {name: v for name, v in defaults.items() if isinstance(v, str) and v.startswith("configs/")}
    stages = parse_dockerfile(DOCKER_DIR / "Dockerfile")
    for target in bake_targets(env={}).values():
        stage = stages[target["target"]]
        for name, value in relative.items():
            inside = f"{stage.workdir()}/{value}"
            assert inside.startswith(stage.env()["RECAP_CONFIG_DIR"] + "/"), f"{target['target']}: {name}={value}"
            assert (REPO / value).is_file(), f"pipeline default {name}={value}: no such file in the repo"
