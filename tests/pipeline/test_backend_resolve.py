"""Every step of the compiled pipeline, resolved as the KFP v2 backend resolves it, runs an image
docker/ builds, the command KFP's launcher runs, and the env and resources we meant.

The resolver (pipeline/backend_resolve.py) encodes the backend's rules: the driver takes a pod's
image (and each resource field) whole from the first `$.inputs.parameters[...]` channel found
anywhere in the string; command/args get each full placeholder substituted; the launcher puts
the executor input JSON in place of `{{$}}`. The test compiles every documented compile option
and resolves every task of every sub-DAG, the exit handler's included.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from pipeline import images as image_settings
from pipeline.backend_resolve import (
    EnvSource,
    ResolveError,
    Volume,
    resolve,
    resolve_pod_spec_field,
)
from pipeline.components import STEP_IMAGES
from pipeline.dag import (
    GCS_KEY_MOUNT,
    RESOURCES,
    STORAGE_EMULATOR_ENV,
    CompileOptions,
    compile_pipeline,
)
from pipeline.images import IMAGE_PARAMETERS, ImageSettings
from tests.docker.build_files import DOCKER_DIR, bake_targets, parse_dockerfile

# A Docker image reference: [registry[:port]/]path[:tag] (lowercase path, tag <= 128 chars).
IMAGE_REFERENCE = re.compile(
    r"^(?:[a-zA-Z0-9.-]+(?::\d+)?/)?[a-z0-9]+(?:[._-][a-z0-9]+)*(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)*"
    r":[\w][\w.-]{0,127}$"
)
OTHER_REGISTRY = ImageSettings(registry="europe-docker.pkg.dev/proj/recap", tag="1.2.3")
# Every documented compile option (README, `recap pipeline compile --help`) and all together.
VARIANTS = {
    "default": CompileOptions(images=ImageSettings(image_settings.DEFAULT_REGISTRY, image_settings.DEFAULT_TAG)),
    "registry-tag": CompileOptions(images=OTHER_REGISTRY),
    "gcs-secret": CompileOptions(gcs_secret="recap-gcs-key"),
    "storage-config-map": CompileOptions(storage_config_map="recap-storage"),
    "all": CompileOptions(images=OTHER_REGISTRY, gcs_secret="recap-gcs-key", storage_config_map="recap-storage"),
}
RUN = {"raw_data_uri": "gs://bucket/raw"}
TASKS = {"validate", "validation-gate", "convert", "train", "evaluate", "push", "not-blessed", "delete-training-job"}


@pytest.fixture(scope="module")
def packages(tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("variants")
    return {name: Path(compile_pipeline(str(out / f"{name}.yaml"), options)) for name, options in VARIANTS.items()}


def built_images(settings: ImageSettings) -> dict[str, str]:
    """Image reference -> Dockerfile stage, as `make images` builds them with these settings."""
    env = {"RECAP_IMAGE_REGISTRY": settings.registry, "RECAP_IMAGE_TAG": settings.tag}
    stages = parse_dockerfile(DOCKER_DIR / "Dockerfile")
    out = {}
    for target in bake_targets(env=env).values():
        assert target["target"] in stages, f"bake target {target['target']} has no Dockerfile stage"
        out.update({tag: target["target"] for tag in target["tags"]})
    return out


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_task_runs_an_image_that_docker_builds(packages, variant):
    options = VARIANTS[variant]
    built = built_images(options.images)
    resolved = resolve(packages[variant], RUN)
    assert set(resolved) == TASKS
    for name, task in resolved.items():
        assert IMAGE_REFERENCE.match(task.image), f"{variant}/{name}: {task.image!r} is not an image reference"
        assert task.image in built, f"{variant}/{name}: {task.image} is not built by docker/ ({sorted(built)})"
        step = name.replace("-", "_")
        assert task.image == options.images.image(STEP_IMAGES[step]), f"{variant}/{name}"
    # the PyTorchJob's image travels as the train step's input: also a built image
    assert resolved["train"].parameters["train_image"] == options.images.image("recap-train")
    assert resolved["train"].parameters["train_image"] in built


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_task_runs_kfps_executor_with_its_inputs(packages, variant):
    for name, task in resolve(packages[variant], RUN, run_id="3f2504e0-4f89").items():
        argv = task.argv
        assert argv[:2] == ("sh", "-ec") and "kfp.dsl.executor_main" in argv[2], name
        assert "{{$" not in " ".join(argv[3:]), f"{name}: unresolved placeholder left for the container"
        executor_input = json.loads(argv[argv.index("--executor_input") + 1])
        assert argv[argv.index("--function_to_execute") + 1] == name.replace("-", "_")
        # the launcher also substitutes inside the JSON: compare what the function receives
        given = {k: v for k, v in executor_input["inputs"]["parameterValues"].items() if k != "base_image"}
        assert given == {k: v for k, v in task.parameters.items() if k != "base_image"}
        assert executor_input["outputs"] == task.executor_input["outputs"]
        if name in ("train", "delete-training-job"):
            assert task.parameters["run_id"] == "3f2504e0-4f89"  # the job name comes from the run id


@pytest.mark.parametrize("variant", VARIANTS)
def test_env_volumes_and_resources_reach_every_pod(packages, variant):
    options = VARIANTS[variant]
    for name, task in resolve(packages[variant], RUN).items():
        cpu_request, cpu_limit, memory_request, memory_limit = RESOURCES[name.replace("-", "_")]
        resources = task.resources
        assert (resources.cpu_request, resources.cpu_limit) == (cpu_request, cpu_limit), name
        assert (resources.memory_request, resources.memory_limit) == (memory_request, memory_limit), name
        env = dict(task.env)
        if options.gcs_secret:
            assert env["GOOGLE_APPLICATION_CREDENTIALS"] == f"{GCS_KEY_MOUNT}/key.json"
            assert Volume("secret", options.gcs_secret, GCS_KEY_MOUNT) in task.volumes
        else:
            assert "GOOGLE_APPLICATION_CREDENTIALS" not in env and not task.volumes
        emulator = EnvSource(STORAGE_EMULATOR_ENV, "configMap", options.storage_config_map, STORAGE_EMULATOR_ENV)
        assert (emulator in task.env_from) == bool(options.storage_config_map), name


def test_a_rerun_with_other_images_runs_exactly_those(packages):
    """What a UI rerun does: change the whole-image parameters, nothing else."""
    rerun = {parameter: f"registry.example/hotfix/{name}:0.2.0-rc1" for name, parameter in IMAGE_PARAMETERS.items()}
    resolved = resolve(packages["default"], {**RUN, **rerun})
    for name, task in resolved.items():
        assert task.image == rerun[IMAGE_PARAMETERS[STEP_IMAGES[name.replace("-", "_")]]]
    assert resolved["train"].parameters["train_image"] == rerun["train_image"]


def test_the_driver_takes_the_whole_image_from_a_parameter_inside_a_longer_string():
    """The backend's driver does not splice a parameter into a longer image string: it finds the
    channel anywhere (unanchored) and uses the parameter's whole value. This is why the image
    is never built as `registry/name:{tag parameter}`."""
    parameters = {"pipelinechannel--image_tag": "0.1.0", "pipelinechannel--img": "reg/x:1", "n": 3}
    partial = "ghcr.io/recap-pipeline/recap-convert:{{$.inputs.parameters['pipelinechannel--image_tag']}}"
    assert resolve_pod_spec_field(partial, parameters, "t") == "0.1.0"
    assert resolve_pod_spec_field("{{$.inputs.parameters['pipelinechannel--img']}}", parameters, "t") == "reg/x:1"
    assert resolve_pod_spec_field("reg/literal:2", parameters, "t") == "reg/literal:2"
    assert resolve_pod_spec_field("{{$.inputs.parameters['n']}}", parameters, "t") == ""  # not a string
    with pytest.raises(ResolveError, match="no parameter"):
        resolve_pod_spec_field("{{$.inputs.parameters['missing']}}", parameters, "t")


def test_run_parameters_are_checked_like_the_api_server(packages):
    with pytest.raises(ResolveError, match="raw_data_uri is required"):
        resolve(packages["default"], {})
    with pytest.raises(ResolveError, match="unknown pipeline parameter"):
        resolve(packages["default"], {**RUN, "image_tag": "0.2.0"})
    with pytest.raises(ResolveError, match="num_workers"):
        resolve(packages["default"], {**RUN, "num_workers": "4"})


def test_task_outputs_flow_into_the_consumers_inputs(packages):
    resolved = resolve(packages["default"], RUN, task_outputs={("evaluate", "reason"): "AUROC dropped"},
                       pipeline_root="gs://root", run_id="r1")
    assert resolved["not-blessed"].parameters["reason"] == "AUROC dropped"
    assert resolved["validation-gate"].parameters["passed"] == "<validate.passed>"  # produced at run time
    train_inputs = resolved["train"].executor_input["inputs"]["artifacts"]
    assert train_inputs["tfrecords"]["artifacts"][0]["uri"] == "gs://root/r1/convert/tfrecords"
    assert "blessed" in resolved["push"].condition and resolved["push"].dag_path[0] == "exit-handler-1"
