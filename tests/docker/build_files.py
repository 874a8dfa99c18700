"""Readers for docker/: the Dockerfile's stages, the bake file and the dockerignore.

The tests read the build files the way BuildKit would: stages with their inherited
ENV/LABEL/USER/ENTRYPOINT, bake targets with `inherits` and `${VAR}` defaults resolved, and the
build context after the per-Dockerfile ignore file (the built images are tested elsewhere).
"""

from __future__ import annotations

import json
import os
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
DOCKER_DIR = REPO / "docker"
BAKE_FILE = DOCKER_DIR / "docker-bake.hcl"


# ---------------------------------------------------------------------------- Dockerfile


@dataclass
class Stage:
    name: str
    base: str  # image reference or the name of an earlier stage
    instructions: list[tuple[str, str]] = field(default_factory=list)  # (KEYWORD, rest)
    parent: Stage | None = None

    def own(self, keyword: str) -> list[str]:
        return [rest for kw, rest in self.instructions if kw == keyword]

    def chain(self) -> list[Stage]:
        """This stage and the stages it is built FROM, nearest first."""
        out, stage = [], self
        while stage is not None:
            out.append(stage)
            stage = stage.parent
        return out

    def entrypoint(self) -> list[str] | None:
        for stage in self.chain():
            if found := stage.own("ENTRYPOINT"):
                return json.loads(found[-1])  # exec form only: JSON array
        return None

    def user(self) -> str | None:
        for stage in self.chain():
            if found := stage.own("USER"):
                return found[-1].strip()
        return None

    def workdir(self) -> str | None:
        for stage in self.chain():
            if found := stage.own("WORKDIR"):
                return found[-1].strip()
        return None

    def env(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for stage in reversed(self.chain()):
            for rest in stage.own("ENV"):
                out.update(_key_values(rest))
        return out

    def labels(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for stage in reversed(self.chain()):
            for rest in stage.own("LABEL"):
                out.update(_key_values(rest))
        return out

    def copies(self) -> list[list[str]]:
        """Every COPY in the chain as its argument list (flags included)."""
        return [shlex.split(rest) for stage in self.chain() for rest in stage.own("COPY")]


def _key_values(rest: str) -> dict[str, str]:
    return dict(token.split("=", 1) for token in shlex.split(rest) if "=" in token)


def logical_lines(text: str) -> list[str]:
    """Join backslash continuations; drop comments and blank lines (as BuildKit does)."""
    lines, current = [], ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if current and stripped.startswith("#"):
            continue  # comment lines inside a continued instruction are dropped too
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        lines.append(current + stripped)
        current = ""
    if current:
        lines.append(current)
    return lines


def parse_dockerfile(path: Path) -> dict[str, Stage]:
    stages: dict[str, Stage] = {}
    current: Stage | None = None
    for line in logical_lines(path.read_text()):
        keyword, _, rest = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            words = [w for w in rest.split() if not w.startswith("--")]
            base = words[0]
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else f"#{len(stages)}"
            current = Stage(name=name, base=base, parent=stages.get(base))
            stages[name] = current
        elif current is not None:
            current.instructions.append((keyword, rest.strip()))
    return stages


def global_args(path: Path) -> dict[str, str]:
    """ARGs with defaults declared before the first FROM."""
    out = {}
    for line in logical_lines(path.read_text()):
        keyword, _, rest = line.partition(" ")
        if keyword.upper() == "FROM":
            break
        if keyword.upper() == "ARG" and "=" in rest:
            key, value = rest.split("=", 1)
            out[key.strip()] = value.strip()
    return out


def dockerfiles() -> list[Path]:
    return sorted(p for p in DOCKER_DIR.iterdir() if "Dockerfile" in p.name and not p.name.endswith(".dockerignore"))


# ---------------------------------------------------------------------------- bake (HCL)

_TOKEN = re.compile(
    r'\s*(?:(?P<comment>(?:#|//)[^\n]*)|(?P<string>"(?:[^"\\]|\\.)*")|(?P<call>[A-Za-z_][\w-]*\(\))'
    r'|(?P<ident>[A-Za-z_][\w-]*)|(?P<punct>[={}\[\],]))'
)


class HclCall(str):
    """An unquoted function call such as `timestamp()`: kept as text, evaluated by bake."""


def _tokens(text: str) -> list[tuple[str, str]]:
    out, pos = [], 0
    text = text.rstrip()
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if not match or match.end() == pos:
            raise ValueError(f"bake file: cannot read at offset {pos}: {text[pos:pos + 30]!r}")
        pos = match.end()
        kind = match.lastgroup
        if kind != "comment":
            out.append((kind, match.group(kind)))
    return out


def _value(tokens: list[tuple[str, str]], i: int) -> tuple[Any, int]:
    kind, text = tokens[i]
    if kind == "string":
        return json.loads(text), i + 1
    if kind == "call":
        return HclCall(text), i + 1
    if text == "[":
        items, i = [], i + 1
        while tokens[i][1] != "]":
            item, i = _value(tokens, i)
            items.append(item)
            if tokens[i][1] == ",":
                i += 1
        return items, i + 1
    if text == "{":
        body, i = _body(tokens, i + 1)
        return body, i
    raise ValueError(f"bake file: unexpected {text!r}")


def _body(tokens: list[tuple[str, str]], i: int) -> tuple[dict[str, Any], int]:
    """Attributes `key = value` until the closing brace (optional commas between them)."""
    out: dict[str, Any] = {}
    while tokens[i][1] != "}":
        key = tokens[i][1]
        if tokens[i + 1][1] != "=":
            raise ValueError(f"bake file: expected `=` after {key!r}")
        out[key], i = _value(tokens, i + 2)
        if tokens[i][1] == ",":
            i += 1
    return out, i + 1


def parse_bake(path: Path = BAKE_FILE) -> dict[str, dict[str, dict[str, Any]]]:
    """{"variable"|"group"|"target": {label: attributes}} for the HCL subset bake files use."""
    tokens = _tokens(path.read_text())
    blocks: dict[str, dict[str, dict[str, Any]]] = {"variable": {}, "group": {}, "target": {}}
    i = 0
    while i < len(tokens):
        kind, label = tokens[i][1], json.loads(tokens[i + 1][1])
        if tokens[i + 2][1] != "{":
            raise ValueError(f"bake file: expected a block after {kind} {label!r}")
        body, i = _body(tokens, i + 3)
        blocks.setdefault(kind, {})[label] = body
    return blocks


def _interpolate(value: Any, variables: dict[str, str]) -> Any:
    if isinstance(value, HclCall):
        return value
    if isinstance(value, str):
        return re.sub(r"\$\{(\w+)\}", lambda m: variables[m.group(1)], value)
    if isinstance(value, list):
        return [_interpolate(v, variables) for v in value]
    if isinstance(value, dict):
        return {k: _interpolate(v, variables) for k, v in value.items()}
    return value


def bake_targets(path: Path = BAKE_FILE, env: dict[str, str] | None = None) -> dict[str, dict[str, Any]]:
    """Targets of the default group, `inherits` merged and variables resolved as bake does
    (an environment variable of the same name overrides a variable's default)."""
    blocks = parse_bake(path)
    env = dict(os.environ if env is None else env)
    variables = {name: env.get(name, body.get("default", "")) for name, body in blocks["variable"].items()}

    def resolved(name: str) -> dict[str, Any]:
        body = blocks["target"][name]
        merged: dict[str, Any] = {}
        for parent in body.get("inherits", []):
            merged.update(resolved(parent))
        merged.update({k: v for k, v in body.items() if k != "inherits"})
        return merged

    names = blocks["group"]["default"]["targets"]
    return {name: _interpolate(resolved(name), variables) for name in names}


# ---------------------------------------------------------------------------- dockerignore
# BuildKit's ignore-file semantics live in docker/build.py (the image tags hash the context it
# computes); docker/ is not a package, so the script is loaded from its path.


def _load_build_script():
    import importlib.util

    spec = importlib.util.spec_from_file_location("recap_docker_build", DOCKER_DIR / "build.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


build_script = _load_build_script()
build_context = build_script.build_context
ignore_patterns = build_script.ignore_patterns
