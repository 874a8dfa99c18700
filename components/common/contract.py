"""The data contract's rules: one definition that validate reports, convert enforces and the reader spot-checks.

`schema.py` says what the columns are (names, types, lengths); this module says which values
they may hold and how bad each breach is. Validate turns every rule into an anomaly with the
severity below (or the config's override); convert refuses to publish data that breaks an
error rule, on the first offending row; the trainer's and evaluator's reader repeats the
cheap per-batch checks (label domain, finiteness). Because all three ask the same functions,
what validate passes convert accepts.

Two thresholds come from the validation config (configs/validation.yaml) and are read by
validate and convert alike: `max_non_finite_share` (NaN/inf allowed per continuous element;
the model zeroes them) and `max_missing_share` (nulls; convert cannot encode a null, so any
null is refused by convert and is an error in validate at the shipped 0.0).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from components.common.schema import FeatureSpec, Role

ERROR, WARNING = "error", "warning"


@dataclass(frozen=True)
class Rule:
    code: str
    severity: str  # the default; validate's config may override value rules, never structural ones
    meaning: str
    structural: bool = False  # data convert cannot encode at all (so it is always an error there)


RULES: dict[str, Rule] = {r.code: r for r in (
    Rule("empty_input", ERROR, "no Parquet file, or no rows in any file", structural=True),
    Rule("unreadable_file", ERROR, "a file could not be read as Parquet (corrupt, truncated, missing)", structural=True),
    Rule("manifest_mismatch", ERROR, "a file's row count or size differs from _MANIFEST.json (changed after publication)",
         structural=True),
    Rule("missing_column", ERROR, "a schema column is absent from a file", structural=True),
    Rule("wrong_type", ERROR, "a column's Arrow type differs from the schema's", structural=True),
    Rule("wrong_list_length", ERROR, "list values per row differ from the schema length", structural=True),
    Rule("missing_values", ERROR, "null rows or null list elements in a feature group (above max_missing_share)",
         structural=True),
    Rule("label_null", ERROR, "a null label", structural=True),
    Rule("non_finite", ERROR, "NaN/inf in a float element: any in an embedding, above max_non_finite_share in a "
         "continuous element"),
    Rule("binary_out_of_range", ERROR, "a binary feature value outside {0, 1}"),
    Rule("label_not_binary", ERROR, "a label value outside {0, 1}"),
    Rule("invalid_id", ERROR, "a negative or null ID"),
)}


@dataclass(frozen=True)
class Breach:
    """Rows of one block that break one rule."""

    code: str
    rows: np.ndarray  # row indices within the block
    count: int  # values breaking the rule (>= len(rows) for list columns)
    what: str  # e.g. "has value 7 (labels are 0 or 1)"


def domain_breach(spec: FeatureSpec, values: np.ndarray) -> Breach | None:
    """Label and binary values outside {0, 1}, negative IDs. `values`: 1-D or [rows, length]."""
    if spec.role in (Role.LABEL, Role.BINARY):
        bad = (values != 0) & (values != 1)
        code, allowed = ("label_not_binary", "labels are 0 or 1") if spec.role == Role.LABEL else \
            ("binary_out_of_range", "binary features are 0 or 1")
    elif spec.role == Role.ID:
        bad = values < 0
        code, allowed = "invalid_id", "IDs are non-negative"
    else:
        return None
    if not bad.any():
        return None
    rows = np.flatnonzero(bad if bad.ndim == 1 else bad.any(axis=1))
    first = values[rows[0]] if values.ndim == 1 else values[rows[0]][bad[rows[0]]][0]
    return Breach(code, rows, int(bad.sum()), f"has value {first.item()} ({allowed})")


def non_finite_counts(values: np.ndarray) -> np.ndarray:
    """NaN/inf per element of a [rows, length] float block."""
    return (~np.isfinite(values)).sum(axis=0)


def allowed_non_finite_share(role: Role | str, max_non_finite_share: float) -> float:
    """Continuous elements may hold a few NaN/inf (the model zeroes them); embeddings are used as-is."""
    return max_non_finite_share if Role(role) == Role.CONTINUOUS else 0.0


def finiteness_breach(spec: FeatureSpec, values: np.ndarray) -> Breach | None:
    """Any NaN/inf in a block of a column that allows none (embeddings): the reader's per-batch check."""
    if spec.role != Role.EMBEDDING:
        return None
    bad = ~np.isfinite(values)
    if not bad.any():
        return None
    rows = np.flatnonzero(bad.any(axis=1))
    return Breach("non_finite", rows, int(bad.sum()), f"has {values[rows[0]][bad[rows[0]]][0].item()} at element "
                  f"{int(np.flatnonzero(bad[rows[0]])[0])} (embeddings must be finite)")


def per_batch_breach(labels: list[tuple[FeatureSpec, np.ndarray]],
                     embeddings: list[tuple[FeatureSpec, np.ndarray]]) -> tuple[FeatureSpec, Breach] | None:
    """The readers' cheap checks over a block of rows: every task label in {0, 1}, every embedding
    finite (continuous NaN/inf are allowed: the model zeroes them). The first breach and its column,
    or None. Used by the trainer's reader per batch and by the launcher's sample check alike."""
    if all(((v == 0) | (v == 1)).all() for _, v in labels) and all(np.isfinite(v).all() for _, v in embeddings):
        return None  # the common case: one pass per array; the rules below name a breach
    for specs, rule in ((labels, domain_breach), (embeddings, finiteness_breach)):
        for spec, values in specs:
            breach = rule(spec, values)
            if breach is not None:
                return spec, breach
    return None


def describe_breach(spec: FeatureSpec, breach: Breach) -> str:
    """How every reader names a per-batch breach after its shard and record."""
    return f"column {spec.column!r} (feature {spec.feature}) {breach.what} [{breach.code}]"


def severity(code: str, overrides: dict[str, str] | None = None) -> str:
    """A rule's severity after the validation config's overrides (structural rules cannot be lowered)."""
    rule = RULES[code]
    if rule.structural:
        return rule.severity
    return (overrides or {}).get(code, rule.severity)


VALIDATION_CONFIG_NAME = "validation.yaml"


@dataclass(frozen=True)
class Thresholds:
    """The validation config's keys that decide what the contract accepts, read the same way by every step."""

    max_non_finite_share: float = 0.02
    max_missing_share: float = 0.0
    severity: tuple[tuple[str, str], ...] = ()


def load_thresholds(path: str | None = None) -> Thresholds:
    """The contract's thresholds from a validation config (default: the bundled configs/validation.yaml).

    Only the keys above are read here; validate checks the whole file against its own model.
    """
    from components.common.config import read_yaml, repo_configs_dir
    from components.common.errors import ConfigError

    source = path or str(repo_configs_dir() / VALIDATION_CONFIG_NAME)
    if path is None and not (repo_configs_dir() / VALIDATION_CONFIG_NAME).exists():
        return Thresholds()
    data = read_yaml(source) or {}
    out = {}
    for key in ("max_non_finite_share", "max_missing_share"):
        if key in data:
            value = data[key]
            if not isinstance(value, int | float) or not 0 <= value <= 1:
                raise ConfigError(f"{source}: {key}: expected a share in [0, 1], got {value!r}")
            out[key] = float(value)
    overrides = data.get("severity") or {}
    if not isinstance(overrides, dict):
        raise ConfigError(f"{source}: severity: expected a mapping of code -> error|warning")
    out["severity"] = tuple(sorted((str(k), str(v)) for k, v in overrides.items() if k in RULES))
    return Thresholds(**out)
