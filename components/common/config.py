"""YAML configs as strict pydantic v2 models, with `${ENV}` / `${ENV:-default}` expansion.

Every load error is one line naming the file and the field path (`optimizer.lr`), so a
typo in a config fails at start-up, not an hour into training.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from components.common.errors import ConfigError

_ENV_PATTERN = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-(.*?))?\}")

ModelT = TypeVar("ModelT", bound=BaseModel)


class StrictModel(BaseModel):
    """Base for configs people write: unknown keys are errors, not silently ignored."""

    model_config = ConfigDict(extra="forbid", frozen=False, validate_assignment=True)


def expand_env(text: str, source: str = "<string>") -> str:
    """Replace `${NAME}` and `${NAME:-default}`; an unset variable without default is an error."""

    def substitute(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        value = os.environ.get(name)
        if value is not None and (value != "" or default is None):
            return value
        if default is not None:
            return default
        raise ConfigError(f"{source}: environment variable ${{{name}}} is not set and has no default")

    return _ENV_PATTERN.sub(substitute, text)


def read_yaml(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a YAML mapping from a local path or URI, with env expansion."""
    from components.common import storage  # local import: storage imports nothing from here

    source = str(path)
    try:
        text = storage.read_text(source)
    except FileNotFoundError as exc:
        raise ConfigError(f"{source}: config file not found") from exc
    except IsADirectoryError as exc:
        raise ConfigError(f"{source}: is a directory, expected a YAML file") from exc
    try:
        data = yaml.safe_load(expand_env(text, source))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{source}:{where} invalid YAML: {getattr(exc, 'problem', exc)}") from exc
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def format_validation_error(exc: ValidationError, source: str) -> str:
    """First error as `file: field.path: message` (the rest counted), one line."""
    errors = exc.errors()
    first = errors[0]
    field = ".".join(str(p) for p in first["loc"]) or "<root>"
    message = first["msg"]
    if first["type"] == "extra_forbidden":
        message = "unknown field"
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{source}: {field}: {message}{more}"


def parse_config(data: dict[str, Any], model: type[ModelT], source: str = "<config>") -> ModelT:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, source)) from exc


def load_config(path: str | os.PathLike[str], model: type[ModelT],
                overrides: Mapping[str, Any] | None = None) -> ModelT:
    """Load a YAML config file, apply `dotted.key: value` overrides (see set_override), validate
    into `model`: a flag and the same field in the file are checked alike, errors name the file."""
    data = read_yaml(path)
    for key, value in (overrides or {}).items():
        set_override(data, key, value)
    return parse_config(data, model, str(path))


def set_override(data: dict[str, Any], dotted_key: str, value: Any) -> None:
    """Apply a `section.key=value` override (from the CLI) to raw config data before validation."""
    node = data
    *parents, leaf = dotted_key.split(".")
    for part in parents:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"override {dotted_key}: {part} is not a section")
        node = child
    node[leaf] = value


def repo_configs_dir() -> Path:
    """Where configs/ lives: $RECAP_CONFIG_DIR (images) or the source checkout."""
    env = os.environ.get("RECAP_CONFIG_DIR")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2] / "configs"
