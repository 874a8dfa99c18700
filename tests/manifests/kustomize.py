"""Just enough kustomize to check manifests/ without a cluster or the kustomize binary.

`build(dir)` loads a kustomization's resources (recursively), applies its components and
patches, and raises `KustomizeError` where real kustomize would fail or silently do nothing:
a listed file that does not exist, a patch whose target matches no resource, a JSON 6902
operation on a path the target lacks. Name prefixes, namespaces and image rewrites are not
modelled (the overlays here do not rename anything); `kubectl kustomize` renders the rest
when it is installed.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

KUSTOMIZATION_FILES = ("kustomization.yaml", "kustomization.yml", "Kustomization")


class KustomizeError(AssertionError):
    """A kustomization that real kustomize would reject, or a patch that would not apply."""


@dataclass(frozen=True)
class ResourceId:
    group: str
    kind: str
    name: str

    @staticmethod
    def of(doc: dict[str, Any]) -> ResourceId:
        api_version = doc.get("apiVersion", "")
        group = api_version.split("/", 1)[0] if "/" in api_version else ""
        return ResourceId(group, doc.get("kind", ""), doc.get("metadata", {}).get("name", ""))


def kustomization_file(directory: Path) -> Path:
    for name in KUSTOMIZATION_FILES:
        if (directory / name).is_file():
            return directory / name
    raise KustomizeError(f"{directory}: no kustomization.yaml")


def load_docs(path: Path) -> list[dict[str, Any]]:
    try:
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    except yaml.YAMLError as exc:
        raise KustomizeError(f"{path}: invalid YAML: {exc}") from exc
    for doc in docs:
        if not isinstance(doc, dict) or not doc.get("apiVersion") or not doc.get("kind"):
            raise KustomizeError(f"{path}: a document without apiVersion/kind")
        if not doc.get("metadata", {}).get("name"):
            raise KustomizeError(f"{path}: {doc['kind']} without metadata.name")
    return docs


# ------------------------------------------------------------------------------ JSON 6902


def _unescape(token: str) -> str:
    return token.replace("~1", "/").replace("~0", "~")


def apply_json6902(doc: dict[str, Any], ops: list[dict[str, Any]], where: str) -> None:
    for op in ops:
        tokens = [_unescape(t) for t in op["path"].lstrip("/").split("/")]
        parent: Any = doc
        for depth, token in enumerate(tokens[:-1]):
            try:
                parent = parent[int(token)] if isinstance(parent, list) else parent[token]
            except (KeyError, IndexError, ValueError, TypeError):
                missing = "/" + "/".join(tokens[: depth + 1])
                raise KustomizeError(f"{where}: {op['op']} {op['path']}: {missing} does not exist") from None
        leaf = tokens[-1]
        kind = op["op"]
        if isinstance(parent, list):
            if kind == "add":
                parent.insert(len(parent) if leaf == "-" else int(leaf), copy.deepcopy(op["value"]))
                continue
            index = int(leaf)
            if not 0 <= index < len(parent):
                raise KustomizeError(f"{where}: {kind} {op['path']}: index out of range")
            if kind == "replace":
                parent[index] = copy.deepcopy(op["value"])
            elif kind == "remove":
                del parent[index]
            continue
        if not isinstance(parent, dict):
            raise KustomizeError(f"{where}: {kind} {op['path']}: parent is not an object")
        if kind in ("replace", "remove") and leaf not in parent:
            raise KustomizeError(f"{where}: {kind} {op['path']}: nothing there")
        if kind in ("add", "replace"):
            parent[leaf] = copy.deepcopy(op["value"])
        elif kind == "remove":
            del parent[leaf]
        else:
            raise KustomizeError(f"{where}: unsupported op {kind}")


def strategic_merge(base: dict[str, Any], patch: dict[str, Any]) -> None:
    """Maps merge, everything else replaces (kustomize's behaviour for lists of custom kinds)."""
    for key, value in patch.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            strategic_merge(base[key], value)
        else:
            base[key] = copy.deepcopy(value)


# ------------------------------------------------------------------------------ build


def _select(docs: list[dict[str, Any]], target: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for doc in docs:
        rid = ResourceId.of(doc)
        if "group" in target and target["group"] != rid.group:
            continue
        if "version" in target and not doc["apiVersion"].endswith(f"/{target['version']}") and doc["apiVersion"] != target["version"]:
            continue
        if "kind" in target and target["kind"] != rid.kind:
            continue
        if "name" in target and target["name"] != rid.name:
            continue
        out.append(doc)
    return out


def _apply_patches(docs: list[dict[str, Any]], patches: list[dict[str, Any]], root: Path, where: str) -> None:
    for index, entry in enumerate(patches):
        label = f"{where}: patches[{index}]"
        if "path" in entry:
            patch_file = root / entry["path"]
            if not patch_file.is_file():
                raise KustomizeError(f"{label}: {entry['path']} does not exist")
            text = patch_file.read_text()
        else:
            text = entry.get("patch", "")
        body = yaml.safe_load(text)
        if isinstance(body, list):  # JSON 6902
            if "target" not in entry:
                raise KustomizeError(f"{label}: a JSON 6902 patch needs a target")
            targets = _select(docs, entry["target"])
            if not targets:
                raise KustomizeError(f"{label}: target {entry['target']} matches no resource")
            for doc in targets:
                apply_json6902(doc, body, f"{label} on {ResourceId.of(doc)}")
        elif isinstance(body, dict):  # strategic merge
            selector = entry.get("target") or {"kind": body.get("kind"), "name": body.get("metadata", {}).get("name")}
            targets = _select(docs, selector)
            if not targets:
                raise KustomizeError(f"{label}: target {selector} matches no resource")
            for doc in targets:
                strategic_merge(doc, {k: v for k, v in body.items() if k not in ("apiVersion", "kind")})
        else:
            raise KustomizeError(f"{label}: empty patch")


def build(directory: Path, _stack: tuple[Path, ...] = ()) -> list[dict[str, Any]]:
    """Resources of a kustomization after its components and patches (see module doc)."""
    directory = directory.resolve()
    if directory in _stack:
        raise KustomizeError(f"{directory}: cycle in resources")
    path = kustomization_file(directory)
    spec = yaml.safe_load(path.read_text()) or {}
    kind = spec.get("kind", "Kustomization")
    docs: list[dict[str, Any]] = []
    for entry in spec.get("resources", []):
        target = (directory / entry).resolve()
        if target.is_dir():
            if kustomization_file(target).parent != target:
                raise KustomizeError(f"{path}: {entry} is a directory without kustomization.yaml")
            docs.extend(build(target, (*_stack, directory)))
        elif target.is_file():
            docs.extend(load_docs(target))
        else:
            raise KustomizeError(f"{path}: resource {entry} does not exist")
    for generator in spec.get("configMapGenerator", []):
        data = dict(item.split("=", 1) for item in generator.get("literals", []))
        docs.append({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": generator["name"]}, "data": data})
    seen: set[ResourceId] = set()
    for doc in docs:
        rid = ResourceId.of(doc)
        if rid in seen:
            raise KustomizeError(f"{path}: {rid} appears twice")
        seen.add(rid)
    for entry in spec.get("components", []):
        apply_component(docs, (directory / entry).resolve())
    if kind == "Component":
        return docs
    _apply_patches(docs, spec.get("patches", []), directory, str(path))
    for image in spec.get("images", []):
        uses = [c for d in docs for c in _containers(d) if c.get("image", "").split(":")[0] == image["name"]]
        if not uses:
            raise KustomizeError(f"{path}: images: {image['name']} is used by no container")
    return docs


def apply_component(docs: list[dict[str, Any]], component: Path) -> None:
    """Apply a kustomize Component's patches to already built resources, in place."""
    spec = yaml.safe_load(kustomization_file(component).read_text()) or {}
    if spec.get("kind") != "Component":
        raise KustomizeError(f"{component}: not a kustomize Component")
    if spec.get("resources"):
        docs.extend(d for entry in spec["resources"] for d in load_docs(component / entry))
    _apply_patches(docs, spec.get("patches", []), component, str(component))


def _containers(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """Containers of any pod template in a resource (Deployment, PyTorchJob replicas, ...)."""
    found: list[dict[str, Any]] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("containers"), list):
                found.extend(c for c in node["containers"] if isinstance(c, dict))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(doc)
    return found


containers = _containers
