"""`recap validate`: thin wrapper over components.validate.run; exit 1 on error anomalies."""

from __future__ import annotations

import argparse

from components.common.errors import CheckFailed, ConfigError
from components.common.schema import load_schema
from components.validate.anomalies import CODES
from components.validate.config import load_validation_config
from components.validate.validator import run as validate


def add_arguments(parser: argparse.ArgumentParser) -> None:
    # --input/--out are checked in run(), after the router's --config_path check, so every
    # usage error is one `recap validate: error: ...` line with exit code 2.
    parser.add_argument("--input", help="(required) directory/prefix of raw Parquet (local or gs://)")
    parser.add_argument("--schema", default="local", help="schema variant (local, prod) or a schema YAML path")
    parser.add_argument("--out", help="(required) output directory for statistics, anomalies, report, metrics")
    parser.add_argument("--reference-stats", default=None, help="statistics.json of a reference run, for drift")
    parser.add_argument("--config_path", "--config-path", dest="config_path", default=None,
                        help="validation config YAML (default: configs/validation.yaml)")
    parser.add_argument("--list-codes", action="store_true", help="print every anomaly code with its default "
                        "severity and meaning, then exit")


def failure_line(result) -> str:
    """One line: how many errors, their codes, and where the first one is (file, row, column)."""
    errors = result.errors
    named = ", ".join(f"{a.code}({a.column})" if a.column else a.code for a in errors)
    first = errors[0]
    example = first.examples[0] if first.examples else {}
    where = ": ".join(part for part in (
        example.get("file"), f"row {example['row']}" if "row" in example else None,
        f"column {first.column!r}" if first.column else None) if part)
    return (f"{len(errors)} error anomalies: {named}; first: {where + ': ' if where else ''}{first.code}; "
            f"see {result.anomalies_uri}")


def run(args: argparse.Namespace) -> int:
    if args.list_codes:
        width = max(len(code) for code in CODES)
        for code, (severity, meaning) in CODES.items():
            print(f"{code:<{width}}  {severity:<7}  {meaning}")
        return 0
    missing = [flag for flag, value in (("--input", args.input), ("--out", args.out)) if not value]
    if missing:
        raise ConfigError(f"missing required argument(s): {', '.join(missing)}")
    result = validate(args.input, load_schema(args.schema), args.out, load_validation_config(args.config_path),
                      reference_stats_uri=args.reference_stats)
    print(f"report: {result.report_uri}")
    if result.has_errors:
        raise CheckFailed(failure_line(result))
    return 0
