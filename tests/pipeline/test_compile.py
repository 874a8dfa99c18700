"""The compiled YAML: a valid PipelineSpec, the DAG's shape, images, retries, caching, no secrets."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from google.protobuf import json_format
from kfp.pipeline_spec import pipeline_spec_pb2

from pipeline.dag import CompileOptions, compile_pipeline
from pipeline.images import IMAGE_PARAMETERS, ImageSettings

REPO = Path(__file__).resolve().parents[2]
STEPS = {"validate", "validation-gate", "convert", "train", "evaluate", "push", "not-blessed", "delete-training-job"}


def _compile(tmp_path: Path, **options) -> tuple[str, list[dict]]:
    path = compile_pipeline(str(tmp_path / "p.yaml"), CompileOptions(**options))
    text = Path(path).read_text()
    return text, [doc for doc in yaml.safe_load_all(text) if doc]


def _parse(doc: dict) -> pipeline_spec_pb2.PipelineSpec:
    spec = pipeline_spec_pb2.PipelineSpec()
    json_format.ParseDict(doc, spec, ignore_unknown_fields=False)  # raises on any unknown field
    return spec


def _tasks(spec: pipeline_spec_pb2.PipelineSpec) -> dict[str, pipeline_spec_pb2.PipelineTaskSpec]:
    """Every task in every (sub-)DAG, by task name."""
    out = dict(spec.root.dag.tasks)
    for component in spec.components.values():
        if component.WhichOneof("implementation") == "dag":
            out.update(component.dag.tasks)
    return out


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    return _compile(tmp_path_factory.mktemp("compile"))


def test_yaml_is_a_valid_pipeline_spec_with_every_step(compiled):
    _, docs = compiled
    assert len(docs) == 1  # no platform spec without a GCS secret
    spec = _parse(docs[0])
    assert spec.pipeline_info.name == "recap-heavy-ranker"
    assert set(_tasks(spec)) >= STEPS


def test_dag_order_gate_and_blessing_condition(compiled):
    spec = _parse(compiled[1][0])
    tasks = _tasks(spec)
    assert "validation-gate" in tasks["convert"].dependent_tasks
    assert tasks["train"].inputs.artifacts["tfrecords"].task_output_artifact.producer_task == "convert"
    assert tasks["evaluate"].inputs.artifacts["model"].task_output_artifact.producer_task == "train"
    conditions = [t.trigger_policy.condition for t in tasks.values() if t.trigger_policy.condition]
    assert any("evaluate-blessed" in c and "== true" in c for c in conditions)
    exit_task = tasks["delete-training-job"]
    assert exit_task.trigger_policy.strategy == pipeline_spec_pb2.PipelineTaskSpec.TriggerPolicy.ALL_UPSTREAM_TASKS_COMPLETED


def test_job_name_comes_from_the_run_id_at_run_time(compiled):
    text, docs = compiled
    tasks = _tasks(_parse(docs[0]))
    for name in ("train", "delete-training-job"):
        run_id = tasks[name].inputs.parameters["run_id"].runtime_value.constant.string_value
        assert run_id == "{{$.pipeline_job_uuid}}"
    assert "recap-train-" not in text.replace("recap-train:", "")  # no frozen job name anywhere


def test_parameters_people_change_in_the_ui(compiled):
    spec = _parse(compiled[1][0])
    params = spec.root.input_definitions.parameters
    for name in ("raw_data_uri", "data_root", "train_config", "num_workers", "procs_per_worker", "gpus_per_worker",
                 "train_image", "launch_image", "baseline_metrics_uri", "evaluate_config", "cache_key"):
        assert name in params, name
    assert not params["raw_data_uri"].is_optional
    assert not [name for name in params if "tolerance" in name]  # the blessing's criteria live in evaluate_config
    for name, default in ImageSettings().parameter_defaults().items():
        assert params[name].default_value.string_value == default


def test_retries_caching_and_resources(compiled):
    spec = _parse(compiled[1][0])
    tasks = _tasks(spec)
    assert tasks["push"].retry_policy.max_retry_count >= 2
    assert tasks["train"].retry_policy.max_retry_count == 0  # the PyTorchJob's backoffLimit retries instead
    for cached in ("validate", "convert"):
        assert tasks[cached].caching_options.enable_cache
        assert "cache_key" in tasks[cached].inputs.parameters
    for uncached in ("train", "push", "delete-training-job"):
        assert not tasks[uncached].caching_options.enable_cache, uncached
    executors = spec.deployment_spec.fields["executors"]
    for name, executor in executors.struct_value.fields.items():
        resources = executor.struct_value.fields["container"].struct_value.fields["resources"].struct_value.fields
        assert {"cpuRequest", "cpuLimit", "memoryRequest", "memoryLimit"} <= set(resources), name


def test_each_image_is_one_whole_image_parameter_defaulting_to_the_compile_time_registry(tmp_path):
    _, docs = _compile(tmp_path, images=ImageSettings(registry="registry.example.com/ml", tag="7.7.7"))
    spec = _parse(docs[0])
    images = {
        executor.struct_value.fields["container"].struct_value.fields["image"].string_value
        for executor in spec.deployment_spec.fields["executors"].struct_value.fields.values()
    }
    # the whole image string is one placeholder: the only form the KFP backend resolves
    whole = {f"{{{{$.inputs.parameters['pipelinechannel--{p}']}}}}" for p in IMAGE_PARAMETERS.values()}
    assert images and images <= whole
    params = spec.root.input_definitions.parameters
    for name, parameter in IMAGE_PARAMETERS.items():
        assert params[parameter].default_value.string_value == f"registry.example.com/ml/{name}:7.7.7"


def test_no_secrets_or_machine_paths_in_the_yaml(tmp_path):
    text, docs = _compile(tmp_path, gcs_secret="recap-gcs-key")
    assert len(docs) == 2
    platform = pipeline_spec_pb2.PlatformSpec()
    json_format.ParseDict(docs[1], platform, ignore_unknown_fields=False)
    executors = docs[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    assert all(e["secretAsVolume"][0]["secretName"] == "recap-gcs-key" for e in executors.values())
    for needle in (str(REPO), os.path.expanduser("~"), "/tmp/", "PRIVATE KEY", "private_key", "client_secret",
                   "Bearer "):
        assert needle not in text, needle


@pytest.mark.integration
@pytest.mark.parametrize("tool", ["recap", "kfp"])
def test_compile_from_the_command_line(tool, tmp_path):
    out = tmp_path / "recap_pipeline.yaml"
    bin_dir = Path(sys.executable).parent
    if tool == "recap":
        argv = [str(bin_dir / "recap"), "pipeline", "compile", "--output", str(out), "--tag", "9.9.9"]
    else:
        argv = [str(bin_dir / "kfp"), "dsl", "compile", "--py", str(REPO / "pipeline" / "dag.py"),
                "--function", "recap_pipeline", "--output", str(out)]
    done = subprocess.run(argv, capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    spec = _parse(next(d for d in yaml.safe_load_all(out.read_text()) if d))
    assert spec.pipeline_info.name == "recap-heavy-ranker"
    if tool == "recap":
        default = spec.root.input_definitions.parameters["launch_image"].default_value.string_value
        assert default.endswith("/recap-launch:9.9.9")


def test_data_steps_carry_no_kfp_retry_so_a_data_error_fails_the_run_at_once(compiled):
    """KFP's retry policy has no condition (it repeats every failure alike): a data step with one
    would redo a failing conversion after 30 s and 60 s. Their transient faults are retried in the
    step process instead (test_runtime), API-only steps keep KFP retries."""
    from pipeline.dag import DATA_STEPS

    tasks = _tasks(_parse(compiled[1][0]))
    for step in DATA_STEPS:
        assert not tasks[step].HasField("retry_policy"), step
    assert tasks["delete-training-job"].retry_policy.max_retry_count >= 1
