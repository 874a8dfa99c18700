"""What each step of a compiled pipeline runs on a real KFP v2 backend: image, command, args,
env, resources, resolved from the YAML and the run's parameters the way the backend does.

kfp.local does not resolve a task's image or pod spec at all, so it cannot catch a pipeline
that no cluster can run. This module follows the KFP v2 backend instead (2.4 to 2.17):
- **the driver** resolves each task's inputs (run parameters, the parent DAG's inputs,
  `{{$.pipeline_job_uuid}}`-style constants, component defaults for required inputs only) and
  builds the pod. For the **image** and every **resource** field it applies one rule: if the
  string contains a `$.inputs.parameters['NAME']` channel *anywhere* (its pattern is not
  anchored), the whole field becomes NAME's string value, else the string is used as it is. So
  `reg/img:{{$.inputs.parameters['tag']}}` runs image `0.1.0`: only a whole-value parameter
  works. Non-string values give an empty string. Command and args: every full
  `{{$.inputs.parameters['NAME']}}` is substituted in place; `IfPresent` clauses are expanded.
  Literal `env` entries are copied verbatim (no placeholders are resolved in env).
- **the launcher** (inside the pod) substitutes `{{$}}` with the executor input as JSON in the
  command's first word, and `{{$}}` plus every input/output parameter and artifact
  placeholder in the remaining words.

`resolve(package, arguments)` returns one `ResolvedTask` per container task, keyed by task name,
for every task of every sub-DAG (conditions are recorded, not evaluated). Values produced at
run time by another task appear as `<producer.output>` unless given in `task_outputs`. The
executor input's artifact URIs are `<pipeline_root>/<run_id>/<task>/<output>` and its output
files live under /tmp/kfp: the same shape as the backend's, not its exact paths. Used by the
conformance tests and by runners that execute each step in the image the YAML names.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from components.common.errors import ConfigError

# The driver's test for "this field is a parameter channel": unanchored, first match wins.
PARAMETER_CHANNEL = re.compile(r"\$.inputs.parameters\['(.+?)'\]")
# What the driver substitutes in command and args: the complete placeholder only.
PARAMETER_PLACEHOLDER = re.compile(r"\{\{\$\.inputs\.parameters\['(.+?)'\]\}\}")
EXECUTOR_INPUT = "{{$}}"
OUTPUT_METADATA_FILE = "/tmp/kfp_outputs/output_metadata.json"
OUTPUT_PARAMETERS_DIR = "/tmp/kfp/outputs"
# Where the launcher stages an artifact URI as a local path, by scheme.
LOCAL_ARTIFACT_ROOTS = {"gs://": "/gcs/", "minio://": "/minio/", "s3://": "/s3/"}
# A Kubernetes resource.Quantity, as the driver parses resource fields.
QUANTITY = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+|[KMGTPE]i|[numkMGTPE])?$")
RUNTIME_CONSTANTS = ("{{$.pipeline_job_uuid}}", "{{$.pipeline_job_name}}", "{{$.pipeline_job_resource_name}}",
                     "{{$.pipeline_task_name}}")
_PYTHON_TYPES = {"STRING": (str,), "NUMBER_INTEGER": (int,), "NUMBER_DOUBLE": (int, float), "BOOLEAN": (bool,),
                 "LIST": (list,), "STRUCT": (dict,)}


class ResolveError(ConfigError):
    """The backend would refuse this run or task (names the task and the field)."""


@dataclass(frozen=True)
class Resources:
    cpu_request: str | None = None
    cpu_limit: str | None = None
    memory_request: str | None = None
    memory_limit: str | None = None
    accelerator: tuple[str, str] | None = None  # (resource name, count)


@dataclass(frozen=True)
class EnvSource:
    """An env var filled by Kubernetes from a ConfigMap or Secret key (kfp-kubernetes)."""

    env: str
    kind: str  # "configMap" | "secret"
    name: str
    key: str


@dataclass(frozen=True)
class Volume:
    kind: str  # "configMap" | "secret"
    name: str
    mount_path: str


@dataclass(frozen=True)
class ResolvedTask:
    name: str
    dag_path: tuple[str, ...]  # enclosing DAG tasks, outermost first
    executor: str
    image: str
    command: tuple[str, ...]
    args: tuple[str, ...]
    env: tuple[tuple[str, str], ...]
    env_from: tuple[EnvSource, ...]
    volumes: tuple[Volume, ...]
    resources: Resources
    parameters: Mapping[str, Any]
    executor_input: Mapping[str, Any] = field(repr=False)
    condition: str = ""  # the trigger condition of the task or an enclosing DAG, if any

    @property
    def argv(self) -> tuple[str, ...]:
        """What the container runs after the launcher: command then args."""
        return self.command + self.args


@dataclass(frozen=True)
class TaskOutput:
    """A parameter value another task produces at run time."""

    producer: str
    key: str

    def __str__(self) -> str:
        return f"<{self.producer}.{self.key}>"


def load_package(package: str | Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(pipeline spec, kubernetes platform spec or {}) from a compiled YAML file."""
    docs = [d for d in yaml.safe_load_all(Path(package).read_text()) if d]
    spec = next((d for d in docs if "deploymentSpec" in d), None)
    if spec is None:
        raise ResolveError(f"{package}: no pipeline spec (deploymentSpec) in the YAML")
    platform = next((d for d in docs if "platforms" in d), {})
    return spec, platform.get("platforms", {}).get("kubernetes", {})


def resolve(package: str | Path, arguments: Mapping[str, Any] | None = None, *, run_id: str = "run-0000",
            pipeline_root: str = "gs://pipeline-root", task_outputs: Mapping[tuple[str, str], Any] | None = None,
            ) -> dict[str, ResolvedTask]:
    """Every container task of the compiled pipeline at `package`, resolved for one run."""
    spec, platform = load_package(package)
    context = _Context(spec, platform, run_id, pipeline_root.rstrip("/"), dict(task_outputs or {}))
    root_inputs = run_parameters(spec, arguments or {})
    context.walk(spec["root"]["dag"], root_inputs, {}, (), "")
    return context.resolved


def run_parameters(spec: Mapping[str, Any], arguments: Mapping[str, Any]) -> dict[str, Any]:
    """Run arguments over the root defaults, checked as the API server does (names, required, types)."""
    definitions = spec["root"].get("inputDefinitions", {}).get("parameters", {})
    unknown = sorted(set(arguments) - set(definitions))
    if unknown:
        raise ResolveError(f"unknown pipeline parameter(s): {', '.join(unknown)}")
    values: dict[str, Any] = {}
    for name, definition in definitions.items():
        if name in arguments:
            value = arguments[name]
            kinds = _PYTHON_TYPES.get(definition.get("parameterType", "STRING"), (object,))
            if isinstance(value, bool) and bool not in kinds or not isinstance(value, kinds):
                raise ResolveError(f"pipeline parameter {name}: {value!r} is not {definition['parameterType']}")
            values[name] = value
        elif "defaultValue" in definition:
            values[name] = _typed(definition["defaultValue"], definition.get("parameterType"))
        elif not definition.get("isOptional"):
            raise ResolveError(f"pipeline parameter {name} is required and has no default")
    return values


def resolve_pod_spec_field(value: str, parameters: Mapping[str, Any], where: str) -> str:
    """The driver's rule for the image and resource fields (whole value from the first channel)."""
    match = PARAMETER_CHANNEL.search(value)
    if match is None:
        return value
    name = match.group(1)
    if name not in parameters:
        raise ResolveError(f"{where}: the executor input has no parameter {name!r}")
    resolved = parameters[name]
    return resolved if isinstance(resolved, str) else ""


def local_artifact_path(uri: str) -> str | None:
    """Where the launcher stages an artifact URI inside the container (None: unsupported scheme)."""
    for scheme, root in LOCAL_ARTIFACT_ROOTS.items():
        if uri.startswith(scheme):
            return root + uri[len(scheme):]
    return None


# --------------------------------------------------------------------------- internals


def _typed(value: Any, parameter_type: str | None) -> Any:
    """YAML defaults are protobuf Values: integers arrive as floats."""
    if parameter_type == "NUMBER_INTEGER" and isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _driver_text(value: Any) -> str:
    """How the driver prints a parameter into command/args."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(int(value)) if float(value).is_integer() else repr(float(value))
    if isinstance(value, list | dict):
        return json.dumps(value, separators=(",", ":"))
    return "" if value is None else str(value)


class _Context:
    def __init__(self, spec: dict[str, Any], platform: dict[str, Any], run_id: str, pipeline_root: str,
                 task_outputs: dict[tuple[str, str], Any]) -> None:
        self.spec = spec
        self.platform_executors = platform.get("deploymentSpec", {}).get("executors", {})
        self.executors = spec["deploymentSpec"]["executors"]
        self.run_id = run_id
        self.pipeline_root = pipeline_root
        self.task_outputs = task_outputs
        self.resolved: dict[str, ResolvedTask] = {}

    def artifact_uri(self, task: str, output: str) -> str:
        return f"{self.pipeline_root}/{self.run_id}/{task}/{output}"

    def walk(self, dag: dict[str, Any], parameters: dict[str, Any], artifacts: dict[str, dict[str, Any]],
             path: tuple[str, ...], condition: str) -> None:
        for name, task in dag.get("tasks", {}).items():
            component = self.spec["components"][task["componentRef"]["name"]]
            inputs = self.task_parameters(name, task, parameters)
            task_artifacts = self.task_artifacts(name, task, artifacts)
            task_condition = task.get("triggerPolicy", {}).get("condition", "") or condition
            if "dag" in component:
                self.walk(component["dag"], inputs, task_artifacts, (*path, name), task_condition)
                continue
            inputs = self.with_component_defaults(name, component, inputs)
            if name in self.resolved:
                raise ResolveError(f"task name {name!r} appears twice; resolve() keys tasks by name")
            self.resolved[name] = self.container_task(name, task, component, inputs, task_artifacts, path,
                                                      task_condition)

    def task_parameters(self, name: str, task: dict[str, Any], scope: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, source in task.get("inputs", {}).get("parameters", {}).items():
            if "componentInputParameter" in source:
                parent = source["componentInputParameter"]
                if parent not in scope:
                    raise ResolveError(f"task {name}: input {key}: parent DAG has no parameter {parent!r}")
                out[key] = scope[parent]
            elif "taskOutputParameter" in source:
                ref = source["taskOutputParameter"]
                producer, output = ref["producerTask"], ref["outputParameterKey"]
                out[key] = self.task_outputs.get((producer, output), str(TaskOutput(producer, output)))
            elif "runtimeValue" in source:
                value = source["runtimeValue"]["constant"]
                out[key] = self.runtime_constant(value, name)
            else:
                raise ResolveError(f"task {name}: input {key}: unsupported parameter source {sorted(source)}")
        return out

    def runtime_constant(self, value: Any, task: str) -> Any:
        if not isinstance(value, str) or value not in RUNTIME_CONSTANTS:
            return value  # the driver passes any other constant through, placeholders and all
        return {"{{$.pipeline_job_uuid}}": self.run_id, "{{$.pipeline_job_name}}": self.run_id,
                "{{$.pipeline_job_resource_name}}": self.run_id, "{{$.pipeline_task_name}}": task}[value]

    def task_artifacts(self, name: str, task: dict[str, Any], scope: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for key, source in task.get("inputs", {}).get("artifacts", {}).items():
            if "componentInputArtifact" in source:
                out[key] = scope[source["componentInputArtifact"]]
            elif "taskOutputArtifact" in source:
                ref = source["taskOutputArtifact"]
                out[key] = {"uri": self.artifact_uri(ref["producerTask"], ref["outputArtifactKey"]), "metadata": {}}
            else:
                raise ResolveError(f"task {name}: artifact {key}: unsupported source {sorted(source)}")
        return out

    @staticmethod
    def with_component_defaults(name: str, component: dict[str, Any], inputs: dict[str, Any]) -> dict[str, Any]:
        """Required inputs without a value take the default; optional ones are left to the component."""
        out = dict(inputs)
        for key, definition in component.get("inputDefinitions", {}).get("parameters", {}).items():
            if key in out or definition.get("isOptional"):
                continue
            if "defaultValue" not in definition:
                raise ResolveError(f"task {name}: neither value nor default for required input {key!r}")
            out[key] = _typed(definition["defaultValue"], definition.get("parameterType"))
        return out

    def container_task(self, name: str, task: dict[str, Any], component: dict[str, Any], parameters: dict[str, Any],
                       artifacts: dict[str, dict[str, Any]], path: tuple[str, ...], condition: str) -> ResolvedTask:
        label = component["executorLabel"]
        container = self.executors[label]["container"]
        where = f"task {name} ({label})"
        executor_input = self.executor_input(name, component, parameters, artifacts)
        image = resolve_pod_spec_field(container.get("image", ""), parameters, f"{where}: image")
        command = _driver_args(container.get("command", []), parameters, where)
        args = _driver_args(container.get("args", []), parameters, where)
        argv = _launcher_argv(command + args, executor_input, where)
        env = tuple((e["name"], e.get("value", "")) for e in container.get("env", []))
        env_from, volumes = self.platform(label, parameters)
        return ResolvedTask(
            name=name, dag_path=path, executor=label, image=image, command=tuple(argv[:len(command)]),
            args=tuple(argv[len(command):]), env=env, env_from=env_from, volumes=volumes,
            resources=_resources(container.get("resources", {}), parameters, where), parameters=parameters,
            executor_input=executor_input, condition=condition,
        )

    def executor_input(self, name: str, component: dict[str, Any], parameters: dict[str, Any],
                       artifacts: dict[str, dict[str, Any]]) -> dict[str, Any]:
        definitions = component.get("inputDefinitions", {}).get("artifacts", {})
        input_artifacts = {
            key: {"artifacts": [{"name": key, "type": definitions.get(key, {}).get("artifactType", {}),
                                 "uri": value["uri"], "metadata": value.get("metadata", {})}]}
            for key, value in artifacts.items()
        }
        outputs = component.get("outputDefinitions", {})
        output_artifacts = {
            key: {"artifacts": [{"name": key, "type": definition.get("artifactType", {}),
                                 "uri": self.artifact_uri(name, key), "metadata": {}}]}
            for key, definition in outputs.get("artifacts", {}).items()
        }
        output_parameters = {key: {"outputFile": f"{OUTPUT_PARAMETERS_DIR}/{key}"}
                             for key in outputs.get("parameters", {})}
        return {
            "inputs": {"parameterValues": dict(parameters), "artifacts": input_artifacts},
            "outputs": {"parameters": output_parameters, "artifacts": output_artifacts,
                        "outputFile": OUTPUT_METADATA_FILE},
        }

    def platform(self, label: str, parameters: dict[str, Any]) -> tuple[tuple[EnvSource, ...], tuple[Volume, ...]]:
        """Env and volumes that kfp-kubernetes adds to the pod (secret/config map by name or parameter)."""
        config = self.platform_executors.get(label, {})
        env: list[EnvSource] = []
        volumes: list[Volume] = []
        for kind, name_key in (("secret", "secretName"), ("configMap", "configMapName")):
            for item in config.get(f"{kind}AsEnv", []):
                source = self.object_name(item, name_key, parameters)
                env += [EnvSource(e["envVar"], kind, source, e[f"{kind}Key"]) for e in item.get("keyToEnv", [])]
            for item in config.get(f"{kind}AsVolume", []):
                volumes.append(Volume(kind, self.object_name(item, name_key, parameters), item["mountPath"]))
        return tuple(env), tuple(volumes)

    @staticmethod
    def object_name(item: dict[str, Any], name_key: str, parameters: dict[str, Any]) -> str:
        by_parameter = item.get(f"{name_key}Parameter", {})
        if "componentInputParameter" in by_parameter:
            return str(parameters.get(by_parameter["componentInputParameter"], ""))
        return str(by_parameter.get("runtimeValue", {}).get("constant", item.get(name_key, "")))


def _driver_args(items: list[str], parameters: Mapping[str, Any], where: str) -> list[str]:
    out: list[str] = []
    for item in items:
        if "$.outputs" in item:
            out.append(item)  # left for the launcher
        elif item.strip().startswith('{"IfPresent":'):
            clause = json.loads(item)["IfPresent"]
            present = parameters.get(clause["InputName"]) is not None
            chosen = clause.get("Then") if present else clause.get("Else")
            chosen = [] if chosen is None else [chosen] if isinstance(chosen, str) else chosen
            out += [_substitute(str(c), parameters, where) for c in chosen]
        else:
            out.append(_substitute(item, parameters, where))
    return out


def _substitute(text: str, parameters: Mapping[str, Any], where: str) -> str:
    def one(match: re.Match[str]) -> str:
        if match.group(1) not in parameters:
            raise ResolveError(f"{where}: parameter {match.group(1)!r} not found in the executor input")
        return _driver_text(parameters[match.group(1)])

    return PARAMETER_PLACEHOLDER.sub(one, text)


def _launcher_argv(argv: list[str], executor_input: dict[str, Any], where: str) -> list[str]:
    """The launcher: `{{$}}` in the first word; `{{$}}` and every placeholder in the rest."""
    as_json = json.dumps(executor_input, separators=(",", ":"))
    placeholders = _launcher_placeholders(executor_input, where)
    out = []
    for index, word in enumerate(argv):
        word = word.replace(EXECUTOR_INPUT, as_json)
        if index > 0:
            for placeholder, value in placeholders.items():
                word = word.replace(placeholder, value)
        out.append(word)
    return out


def _launcher_placeholders(executor_input: dict[str, Any], where: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, value in executor_input["inputs"]["parameterValues"].items():
        text = json.dumps(value) if isinstance(value, list | dict) else _driver_text(value)
        out[f"{{{{$.inputs.parameters['{name}']}}}}"] = text
    for name, entry in executor_input["inputs"]["artifacts"].items():
        uri = entry["artifacts"][0]["uri"]
        out[f"{{{{$.inputs.artifacts['{name}'].uri}}}}"] = uri
        if (path := local_artifact_path(uri)) is not None:
            out[f"{{{{$.inputs.artifacts['{name}'].path}}}}"] = path
    for name, entry in executor_input["outputs"]["artifacts"].items():
        uri = entry["artifacts"][0]["uri"]
        path = local_artifact_path(uri)
        if path is None:
            raise ResolveError(f"{where}: output artifact {name}: unsupported storage scheme in {uri}")
        out[f"{{{{$.outputs.artifacts['{name}'].uri}}}}"] = uri
        out[f"{{{{$.outputs.artifacts['{name}'].path}}}}"] = path
    for name, entry in executor_input["outputs"]["parameters"].items():
        out[f"{{{{$.outputs.parameters['{name}'].output_file}}}}"] = entry["outputFile"]
    return out


def _resources(spec: dict[str, Any], parameters: Mapping[str, Any], where: str) -> Resources:
    """The driver's resource fields: the string field (placeholders allowed) wins over the legacy float."""

    def one(new: str, old: str, unit: str) -> str | None:
        if spec.get(new):
            value = resolve_pod_spec_field(str(spec[new]), parameters, f"{where}: {new}")
        elif spec.get(old):
            value = f"{_driver_text(spec[old])}{unit}"
        else:
            return None
        if not QUANTITY.match(value):
            raise ResolveError(f"{where}: {new}={value!r} is not a Kubernetes quantity")
        return value

    accelerator = None
    if acc := spec.get("accelerator"):
        kind = resolve_pod_spec_field(acc.get("resourceType", ""), parameters, where) or acc.get("type", "")
        count = resolve_pod_spec_field(acc.get("resourceCount", ""), parameters, where) or str(acc.get("count", ""))
        if kind and count:
            accelerator = (kind, count)
    return Resources(
        cpu_request=one("resourceCpuRequest", "cpuRequest", ""), cpu_limit=one("resourceCpuLimit", "cpuLimit", ""),
        memory_request=one("resourceMemoryRequest", "memoryRequest", "G"),
        memory_limit=one("resourceMemoryLimit", "memoryLimit", "G"), accelerator=accelerator,
    )
