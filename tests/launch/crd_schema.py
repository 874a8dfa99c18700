"""A strict JSON Schema of the PyTorchJob v1.9 custom resource, built from installable packages.

What the API server does with a PyTorchJob: it validates it against the CRD's structural
openAPIV3Schema and silently *prunes* every field the schema does not declare. A pruned field
is a silent bug (an annotation that never reaches the pod, a policy that is never applied), so
here every object is closed (`additionalProperties: false`): a field the server would prune
fails validation.

Sources, none of them a file from the operator's repository:
- the operator-owned types (PyTorchJob, its spec, replica specs, run and elastic policies) from
  the kubeflow-training 1.9 SDK's generated models: their `openapi_types`/`attribute_map` come
  from the operator's OpenAPI spec, and a setter that refuses None marks a required field;
- the pod template from kubernetes-validate's strict Kubernetes 1.31 schemas (the operator's
  CRD embeds k8s.io/api v0.31's PodTemplateSpec);
- one rule the CRD adds itself: an embedded pod template's `metadata` keeps only labels,
  annotations, finalizers, name and namespace (controller-gen's schema for embedded ObjectMeta).
"""

from __future__ import annotations

import functools
import re
from typing import Any

KUBERNETES_VERSION = "1.31.0"
K8S_DEFINITIONS = "/api/_definitions.json#/$defs/"  # as kubernetes-validate's schemas refer to them
ROOT_ID = "https://kubernetes.io/api/pytorchjob/kubeflow.org-v1"
TEMPLATE_METADATA_FIELDS = ("annotations", "finalizers", "labels", "name", "namespace")
_K8S_TYPES = {
    "V1ObjectMeta": "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta",
    "K8sIoApiAutoscalingV2MetricSpec": "io.k8s.api.autoscaling.v2.MetricSpec",
}
INT_OR_STRING = {"anyOf": [{"type": "integer"}, {"type": "string"}]}


def _required(cls: type) -> list[str]:
    """Fields whose generated setter refuses None (client-side validation of required fields)."""
    from kubeflow.training.configuration import Configuration

    probe = cls.__new__(cls)
    probe.local_vars_configuration = Configuration()
    required = []
    for attribute in cls.openapi_types:
        try:
            setattr(probe, attribute, None)
        except ValueError:
            required.append(cls.attribute_map[attribute])
    return required


def _type_schema(text: str, defs: dict[str, Any]) -> dict[str, Any]:
    if match := re.fullmatch(r"list\[(.+)\]", text):
        return {"type": "array", "items": _type_schema(match.group(1), defs)}
    if match := re.fullmatch(r"dict\(str, (.+)\)", text):
        return {"type": "object", "additionalProperties": _type_schema(match.group(1), defs)}
    simple = {"str": {"type": "string"}, "int": {"type": "integer"}, "bool": {"type": "boolean"},
              "float": {"type": "number"}, "datetime": {"type": "string", "format": "date-time"}, "object": {},
              "Quantity": INT_OR_STRING}
    if text in simple:
        return simple[text]
    if text in _K8S_TYPES:
        return {"$ref": K8S_DEFINITIONS + _K8S_TYPES[text]}
    if text == "V1PodTemplateSpec":
        return {"$ref": "#/$defs/EmbeddedPodTemplateSpec"}
    _model_schema(text, defs)
    return {"$ref": f"#/$defs/{text}"}


def _model_schema(name: str, defs: dict[str, Any]) -> None:
    from kubeflow.training import models

    if name in defs:
        return
    cls = getattr(models, name)
    defs[name] = {}  # reserve the name first: models refer to each other
    properties = {cls.attribute_map[a]: _type_schema(t, defs) for a, t in cls.openapi_types.items()}
    schema: dict[str, Any] = {"type": "object", "properties": properties, "additionalProperties": False}
    if required := _required(cls):
        schema["required"] = required
    defs[name] = schema


@functools.cache
def pytorchjob_validator() -> Any:
    """A jsonschema validator for PyTorchJob bodies (the dicts the API server receives)."""
    import jsonschema
    from kubernetes_validate.utils import schema_contents
    from referencing import Registry, Resource

    defs: dict[str, Any] = {}
    _model_schema("KubeflowOrgV1PyTorchJob", defs)
    defs["EmbeddedPodTemplateSpec"] = {
        "type": "object", "additionalProperties": False,
        "properties": {
            "metadata": {
                "type": "object", "additionalProperties": False,
                "properties": {
                    "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
                    "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                    "finalizers": {"type": "array", "items": {"type": "string"}},
                    "name": {"type": "string"}, "namespace": {"type": "string"},
                },
            },
            "spec": {"$ref": K8S_DEFINITIONS + "io.k8s.api.core.v1.PodSpec"},
        },
    }
    root = {"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": ROOT_ID,
            "$ref": "#/$defs/KubeflowOrgV1PyTorchJob", "$defs": defs}
    definitions = schema_contents(f"kubernetes-json-schema/v{KUBERNETES_VERSION}-local-strict/_definitions.json",
                                  KUBERNETES_VERSION)
    registry = Resource.from_contents(definitions) @ Registry()
    return jsonschema.Draft202012Validator(root, registry=registry)


def schema_errors(body: dict[str, Any]) -> list[str]:
    """Every violation, as `path: message` (empty: the server keeps the body as sent)."""
    errors = sorted(pytorchjob_validator().iter_errors(body), key=lambda e: list(e.absolute_path))
    return [f"{'.'.join(str(p) for p in e.absolute_path) or '<root>'}: {e.message}" for e in errors]
