"""The data contract: feature groups, names, dtypes, lengths, labels and tasks.

One YAML file per variant (`configs/schema/<name>.yaml`). Every step reads it through
`load_schema` and asks it what it needs: datagen and validate the raw Parquet columns and
Arrow types, convert and the reader its TFRecord feature names (components.records.layout),
train and evaluate the tasks.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
from pydantic import Field, field_validator

from components.common.config import StrictModel, parse_config, read_yaml, repo_configs_dir
from components.common.errors import SchemaError


class Role(StrEnum):
    CONTINUOUS = "continuous"
    BINARY = "binary"
    DISCRETE = "discrete"
    EMBEDDING = "embedding"
    ID = "id"
    LABEL = "label"


# What a role's values are in the TFRecord, and which Arrow value types the raw data may use.
ROLE_DTYPES: dict[Role, str] = {
    Role.CONTINUOUS: "float32", Role.EMBEDDING: "float32",
    Role.BINARY: "int64", Role.DISCRETE: "int64", Role.ID: "int64", Role.LABEL: "int64",
}
RAW_TYPES: dict[str, pa.DataType] = {
    "float32": pa.float32(), "float64": pa.float64(),
    "int8": pa.int8(), "int16": pa.int16(), "int32": pa.int32(), "int64": pa.int64(),
}
SINGLE_GROUP_ROLES = (Role.CONTINUOUS, Role.BINARY, Role.DISCRETE)
SCALAR_ROLES = (Role.ID, Role.LABEL)


class _FeatureModel(StrictModel):
    name: str
    role: Role
    column: str
    feature: str
    dtype: Literal["float32", "int64"]
    raw_type: str
    length: int = Field(ge=1)

    @field_validator("raw_type")
    @classmethod
    def _known_raw_type(cls, value: str) -> str:
        if value not in RAW_TYPES:
            raise ValueError(f"unknown raw_type {value!r}; one of {sorted(RAW_TYPES)}")
        return value


class _TaskModel(StrictModel):
    label: str
    pos_downsampling_rate: float = Field(default=1.0, gt=0, le=1)
    neg_downsampling_rate: float = Field(default=1.0, gt=0, le=1)


class _SchemaModel(StrictModel):
    name: str
    features: list[_FeatureModel]
    tasks: list[_TaskModel] = Field(min_length=1)


@dataclass(frozen=True)
class FeatureSpec:
    name: str
    role: Role
    column: str
    feature: str
    dtype: str
    raw_type: str
    length: int

    @property
    def is_scalar(self) -> bool:
        """IDs and labels are one value per row: a plain Parquet column, not a list."""
        return self.role in SCALAR_ROLES

    @property
    def arrow_value_type(self) -> pa.DataType:
        return RAW_TYPES[self.raw_type]

    @property
    def arrow_type(self) -> pa.DataType:
        value_type = self.arrow_value_type
        return value_type if self.is_scalar else pa.list_(value_type, self.length)


@dataclass(frozen=True)
class TaskSpec:
    label: str
    pos_downsampling_rate: float
    neg_downsampling_rate: float

    @property
    def calibration_ratio(self) -> float:
        """r in the numeric calibration p*r / (1 - p + r*p) that undoes downsampling."""
        return self.neg_downsampling_rate / self.pos_downsampling_rate


@dataclass(frozen=True)
class Schema:
    name: str
    features: tuple[FeatureSpec, ...]
    tasks: tuple[TaskSpec, ...]
    source: str = ""

    def __iter__(self) -> Iterator[FeatureSpec]:
        return iter(self.features)

    def by_role(self, role: Role | str) -> list[FeatureSpec]:
        return [f for f in self.features if f.role == Role(role)]

    def get(self, name: str) -> FeatureSpec:
        for spec in self.features:
            if spec.name == name:
                return spec
        raise SchemaError(f"{self.source or self.name}: no feature named {name!r}")

    def group(self, role: Role | str) -> FeatureSpec:
        """The single continuous / binary / discrete group."""
        (spec,) = self.by_role(role)
        return spec

    @property
    def embeddings(self) -> list[FeatureSpec]:
        return self.by_role(Role.EMBEDDING)

    @property
    def ids(self) -> list[FeatureSpec]:
        return self.by_role(Role.ID)

    @property
    def labels(self) -> list[FeatureSpec]:
        return self.by_role(Role.LABEL)

    @property
    def task_names(self) -> list[str]:
        return [t.label for t in self.tasks]

    def task_label(self, task: TaskSpec | str) -> FeatureSpec:
        return self.get(task.label if isinstance(task, TaskSpec) else task)

    def raw_arrow_schema(self) -> pa.Schema:
        """The Parquet contract: one column per feature group, in schema order."""
        return pa.schema([pa.field(f.column, f.arrow_type, nullable=True) for f in self.features])

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "features": [{**f.__dict__, "role": str(f.role)} for f in self.features],
            "tasks": [t.__dict__ for t in self.tasks],
        }

    @property
    def hash(self) -> str:
        """Identity of the contract: any change to names, types, lengths or tasks changes it."""
        canonical = json.dumps(self.to_json(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def schema_path(name_or_path: str | os.PathLike[str]) -> str:
    """`local` / `prod` name a bundled variant; anything else is a path or URI."""
    text = str(name_or_path)
    if "/" not in text and not text.endswith((".yaml", ".yml")):
        return str(repo_configs_dir() / "schema" / f"{text}.yaml")
    return text


def _check(model: _SchemaModel, source: str) -> None:
    def fail(message: str) -> None:
        raise SchemaError(f"{source}: {message}")

    for attr in ("name", "column", "feature"):
        values = [getattr(f, attr) for f in model.features]
        duplicates = sorted({v for v in values if values.count(v) > 1})
        if duplicates:
            fail(f"duplicate feature {attr}: {', '.join(duplicates)}")
    for index, feature in enumerate(model.features):
        where = f"features.{index} ({feature.name})"
        if feature.dtype != ROLE_DTYPES[feature.role]:
            fail(f"{where}: role {feature.role} needs dtype {ROLE_DTYPES[feature.role]}, got {feature.dtype}")
        if feature.role in SCALAR_ROLES and feature.length != 1:
            fail(f"{where}: role {feature.role} needs length 1, got {feature.length}")
        is_float_raw = feature.raw_type.startswith("float")
        if is_float_raw != (feature.dtype == "float32"):
            fail(f"{where}: raw_type {feature.raw_type} does not fit dtype {feature.dtype}")
    for role in SINGLE_GROUP_ROLES:
        count = sum(1 for f in model.features if f.role == role)
        if count != 1:
            fail(f"needs exactly one {role} feature group, found {count}")
    labels = {f.name for f in model.features if f.role == Role.LABEL}
    for index, task in enumerate(model.tasks):
        if task.label not in labels:
            fail(f"tasks.{index}.label: {task.label!r} is not a label feature")
    task_labels = [t.label for t in model.tasks]
    if len(set(task_labels)) != len(task_labels):
        fail("a task is listed twice")


def load_schema(name_or_path: str | os.PathLike[str]) -> Schema:
    """Load and check a schema variant by name (`local`, `prod`) or path."""
    source = schema_path(name_or_path)
    if not source.startswith("gs://") and not Path(source).exists():
        bundled = sorted(p.stem for p in (repo_configs_dir() / "schema").glob("*.yaml"))
        raise SchemaError(f"{source}: schema not found (bundled variants: {', '.join(bundled)})")
    try:
        model = parse_config(read_yaml(source), _SchemaModel, source)
    except SchemaError:
        raise
    except Exception as exc:  # ConfigError from the loader: same message, schema flavour
        raise SchemaError(str(exc)) from exc
    _check(model, source)
    return Schema(
        name=model.name,
        features=tuple(FeatureSpec(**f.model_dump()) for f in model.features),
        tasks=tuple(TaskSpec(**t.model_dump()) for t in model.tasks),
        source=source,
    )
