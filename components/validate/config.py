"""Validation thresholds: a pydantic model loaded from configs/validation.yaml.

Every field has a sensible default, so `recap validate` works without a config; a YAML
file only lists what it changes. Unknown keys are errors (a typo must not silently
disable a check).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from components.common.config import StrictModel, load_config, repo_configs_dir

Severity = Literal["error", "warning"]


class RateBounds(StrictModel):
    """Allowed positive rate of a label; judged with a Wilson interval so small data is not flagged by noise."""

    min: float = Field(default=1e-5, ge=0, le=1)
    max: float = Field(default=0.6, ge=0, le=1)

    @model_validator(mode="after")
    def _ordered(self) -> RateBounds:
        if self.min > self.max:
            raise ValueError(f"min {self.min} > max {self.max}")
        return self


class DriftConfig(StrictModel):
    """Thresholds on distances between this run's statistics and a reference run's."""

    # L-infinity distance between category distributions (binary elements, discrete values, labels).
    categorical_linf_max: float = Field(default=0.05, gt=0, le=1)
    # L-infinity distance between a label's {0, 1} distributions (= change of its positive rate).
    label_linf_max: float = Field(default=0.02, gt=0, le=1)
    # Jensen-Shannon divergence (base 2, in [0, 1]) between numeric histograms, per element.
    numeric_js_max: float = Field(default=0.05, gt=0, le=1)
    # Elements with fewer observed values (here or in the reference) are not judged.
    min_count: int = Field(default=500, ge=1)


class ValidationConfig(StrictModel):
    # Decoded MB per Arrow record batch; bounds memory whatever the row width (prod rows are
    # ~30 KB, local ~0.6 KB). `batch_rows` pins the row count instead.
    batch_mb: float = Field(default=16.0, gt=0)
    batch_rows: int | None = Field(default=None, ge=1)
    # Examples (file, row) kept per anomaly.
    max_examples: int = Field(default=5, ge=0)
    # Share of null rows in a feature group above which `missing_values` fires.
    max_missing_share: float = Field(default=0.0, ge=0, le=1)
    # Share of NaN/inf values in one element of a float group above which `non_finite` fires.
    max_non_finite_share: float = Field(default=0.02, ge=0, le=1)
    # Default bounds for every label's positive rate, and per-label overrides.
    positive_rate: RateBounds = Field(default_factory=RateBounds)
    positive_rate_per_label: dict[str, RateBounds] = Field(default_factory=dict)
    # z of the Wilson interval used for the positive-rate rule (4 ~ one false alarm in 30 000).
    positive_rate_z: float = Field(default=4.0, gt=0)
    # A column is constant only if it has at least this many rows.
    constant_min_rows: int = Field(default=100, ge=2)
    drift: DriftConfig = Field(default_factory=DriftConfig)
    # Change a rule's severity by code, e.g. {not_parquet: error}.
    severity: dict[str, Severity] = Field(default_factory=dict)
    # Top IDs counted for the "top IDs share" statistic.
    top_ids: int = Field(default=10, ge=1, le=1000)

    @field_validator("severity")
    @classmethod
    def _known_codes(cls, value: dict[str, str]) -> dict[str, str]:
        from components.validate.anomalies import CODES

        unknown = sorted(set(value) - set(CODES))
        if unknown:
            raise ValueError(f"unknown anomaly code(s) {', '.join(unknown)}; known: {', '.join(sorted(CODES))}")
        from components.common.contract import RULES

        lowered = sorted(c for c, s in value.items() if c in RULES and RULES[c].structural and s != RULES[c].severity)
        if lowered:
            raise ValueError(f"{', '.join(lowered)}: structural contract rule(s) stay errors (convert cannot "
                             "encode such data)")
        return value

    def rows_per_batch(self, row_bytes: int) -> int:
        return self.batch_rows or max(64, int(self.batch_mb * 1e6 // max(row_bytes, 1)))

    def rate_bounds(self, label: str) -> RateBounds:
        return self.positive_rate_per_label.get(label, self.positive_rate)


DEFAULT_CONFIG_NAME = "validation.yaml"


def load_validation_config(path: str | None = None) -> ValidationConfig:
    """The config at `path`, or the bundled configs/validation.yaml, or built-in defaults."""
    if path:
        return load_config(path, ValidationConfig)
    bundled = repo_configs_dir() / DEFAULT_CONFIG_NAME
    return load_config(bundled, ValidationConfig) if bundled.exists() else ValidationConfig()
