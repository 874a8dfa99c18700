"""Anomaly codes, their default severities, and the record of one finding.

Codes are stable: dashboards, alerts and `severity` overrides in the validation config
refer to them. An error fails the step (exit 1); a warning is reported only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from components.common.contract import ERROR, RULES, WARNING
from components.common.contract import severity as contract_severity

# code -> (default severity, what it means). The data contract's rules come from
# components.common.contract (shared with convert and the reader); the rest are validate's own.
CODES: dict[str, tuple[str, str]] = {
    **{code: (rule.severity, rule.meaning) for code, rule in RULES.items()},
    "not_parquet": (WARNING, "a file under the input prefix is not Parquet and was skipped"),
    "unlisted_file": (WARNING, "a Parquet file under the prefix is not listed in _MANIFEST.json and was skipped"),
    "unexpected_column": (WARNING, "a file has a column the schema does not know"),
    "variable_size_list": (WARNING, "a list column is variable-size; the contract says fixed_size_list"),
    "constant_column": (WARNING, "a column (or list element) has one value in every row"),
    "positive_rate_out_of_bounds": (ERROR, "a label's positive rate is outside the configured bounds"),
    "drift_categorical": (ERROR, "L-infinity distance to the reference distribution above the threshold"),
    "drift_numeric": (ERROR, "Jensen-Shannon divergence to the reference histogram above the threshold"),
    "reference_mismatch": (WARNING, "the reference statistics come from a different schema; some drift checks skipped"),
}


@dataclass(frozen=True)
class Anomaly:
    code: str
    severity: str
    column: str | None
    count: int
    message: str
    examples: tuple[dict[str, Any], ...] = ()
    details: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"code": self.code, "severity": self.severity, "column": self.column, "count": self.count,
                "message": self.message, "examples": list(self.examples), "details": self.details}

    @property
    def is_error(self) -> bool:
        return self.severity == ERROR


class Findings:
    """Row-level findings gathered while streaming: counts and the first few examples per (code, column)."""

    def __init__(self, max_examples: int) -> None:
        self.max_examples = max_examples
        self.counts: dict[tuple[str, str | None], int] = {}
        self.examples: dict[tuple[str, str | None], list[dict[str, Any]]] = {}
        self.notes: dict[tuple[str, str | None], dict[str, Any]] = {}
        # examples for threshold rules decided at the end (e.g. non_finite): not findings by themselves
        self.samples: dict[tuple[str, str | None], list[dict[str, Any]]] = {}

    def sample(self, code: str, column: str | None, file: str, rows: Any) -> None:
        kept = self.samples.setdefault((code, column), [])
        for row in list(rows[: max(0, self.max_examples - len(kept))]):
            kept.append({"file": file, "row": int(row)})

    def add(self, code: str, column: str | None, count: int, file: str | None = None,
            rows: Any = (), **note: Any) -> None:
        """Count `count` occurrences; keep examples from `rows` (row indices in `file`)."""
        if code not in CODES:
            raise KeyError(f"unknown anomaly code {code}")
        key = (code, column)
        self.counts[key] = self.counts.get(key, 0) + int(count)
        kept = self.examples.setdefault(key, [])
        room = self.max_examples - len(kept)
        if room > 0:
            if file is not None and not len(rows):
                kept.append({"file": file, **{k: v for k, v in note.items() if k != "summary"}})
            for row in list(rows[:room]):
                kept.append({"file": file, "row": int(row), **{k: v for k, v in note.items() if k != "summary"}})
        if "summary" in note:
            self.notes.setdefault(key, {}).update(note["summary"])

    def anomalies(self, severity_overrides: dict[str, str]) -> list[Anomaly]:
        out = []
        for (code, column), count in self.counts.items():
            out.append(make(code, column, count, describe(code, column, count, self.notes.get((code, column), {})),
                            severity_overrides, self.examples.get((code, column), []),
                            self.notes.get((code, column), {})))
        return out


def make(code: str, column: str | None, count: int, message: str, severity_overrides: dict[str, str],
         examples: list[dict[str, Any]] | tuple = (), details: dict[str, Any] | None = None) -> Anomaly:
    severity = contract_severity(code, severity_overrides) if code in RULES else severity_overrides.get(code, CODES[code][0])
    return Anomaly(code=code, severity=severity, column=column, count=int(count), message=message,
                   examples=tuple(examples), details=dict(details or {}))


def describe(code: str, column: str | None, count: int, note: dict[str, Any]) -> str:
    where = f"column {column}: " if column else ""
    extra = "; ".join(f"{k}={v}" for k, v in note.items())
    return f"{where}{CODES[code][1]} ({count} occurrence{'s' if count != 1 else ''}{'; ' + extra if extra else ''})"
