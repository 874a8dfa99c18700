"""Which files to validate, how each file's columns compare to the contract, and Arrow -> numpy.

Which files: `components.common.raw_inputs` (the lister convert uses too). Stray files are
reported, except the generator's `oracle.json`, which sits next to the data on purpose.

Arrow -> numpy uses the flat `.values` buffer of a list column reshaped to
[rows, length]: no per-row Python, and for fixed_size_list without nulls no copy.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from components.common import storage
from components.common.raw_inputs import RawInputs, list_raw_inputs
from components.common.schema import FeatureSpec, Role
from components.datagen.constants import ORACLE_FILE
from components.validate.anomalies import Findings
from components.validate.stats import Where

SIDECAR_NAMES = frozenset({ORACLE_FILE})  # written next to the data, not data


def list_inputs(input_uri: str, findings: Findings) -> RawInputs:
    """Resolve the files to read; reports stray files as `not_parquet` / `unlisted_file`."""
    inputs = list_raw_inputs(input_uri)
    for uri in inputs.unlisted:
        findings.add("unlisted_file", None, 1, uri)
    for uri in inputs.other:
        if storage.basename(uri) not in SIDECAR_NAMES:
            findings.add("not_parquet", None, 1, uri)
    return inputs


# --------------------------------------------------------------------------- column plans

EXACT, CAST, VARLIST, SKIP = "exact", "cast", "varlist", "skip"


@dataclass(frozen=True)
class ColumnPlan:
    spec: FeatureSpec
    mode: str  # EXACT, CAST (numeric values of another width), VARLIST (variable-size list), SKIP
    cast_values: bool = False  # list values need a numeric cast


def _numeric(arrow_type: pa.DataType) -> bool:
    return pa.types.is_integer(arrow_type) or pa.types.is_floating(arrow_type) or pa.types.is_boolean(arrow_type)


def plan_column(spec: FeatureSpec, found: pa.DataType, file: str, rows: int, findings: Findings) -> ColumnPlan:
    """Compare a file's column type with the contract; report and decide how to read it."""
    expected = spec.arrow_type
    if found == expected:
        return ColumnPlan(spec, EXACT)

    def wrong_type(readable: bool) -> None:
        findings.add("wrong_type", spec.column, 1, file, found=str(found), expected=str(expected),
                     read="cast" if readable else "skipped")

    if spec.is_scalar:
        readable = _numeric(found)
        wrong_type(readable)
        return ColumnPlan(spec, CAST if readable else SKIP)
    if pa.types.is_fixed_size_list(found) or pa.types.is_list(found) or pa.types.is_large_list(found):
        value_type = found.value_type
        cast_values = value_type != spec.arrow_value_type
        if cast_values:
            wrong_type(_numeric(value_type))
            if not _numeric(value_type):
                return ColumnPlan(spec, SKIP)
        if pa.types.is_fixed_size_list(found):
            if found.list_size != spec.length:
                findings.add("wrong_list_length", spec.column, rows, file, found=found.list_size,
                             expected=spec.length)
                return ColumnPlan(spec, SKIP)
            return ColumnPlan(spec, CAST, cast_values)
        findings.add("variable_size_list", spec.column, 1, file, found=str(found))
        return ColumnPlan(spec, VARLIST, cast_values)
    wrong_type(False)
    return ColumnPlan(spec, SKIP)


def _drop_null_rows(array: pa.Array, plan: ColumnPlan, where: Where, accumulator) -> tuple[pa.Array, np.ndarray | None]:
    """Count and report null rows; return the non-null rows and their row indices in the file."""
    if not array.null_count:
        return array, None
    valid = np.asarray(array.is_valid())
    null_rows = np.flatnonzero(~valid)
    accumulator.null_rows += len(null_rows)
    code = {Role.LABEL: "label_null", Role.ID: "invalid_id"}.get(plan.spec.role, "missing_values")
    extra = {"reason": "null"} if plan.spec.role == Role.ID else {}
    where.findings.add(code, plan.spec.column, len(null_rows), where.file, where.rows(null_rows), **extra)
    kept = np.flatnonzero(valid)
    return array.filter(pa.array(valid)), where.first_row + kept


def column_block(array: pa.Array, plan: ColumnPlan, where: Where, accumulator) -> np.ndarray | None:
    """The column as numpy: [rows, length] for groups, 1-D for scalars; None if unreadable."""
    if plan.mode == SKIP:
        return None
    array, row_index = _drop_null_rows(array, plan, where, accumulator)
    where.row_index = row_index
    spec = plan.spec
    if spec.is_scalar:
        values = array.to_numpy(zero_copy_only=False)
        if plan.mode == CAST and values.dtype.kind != "f":
            values = values.astype(np.int64)
        return values
    if plan.mode == VARLIST:
        lengths = np.asarray(pc.list_value_length(array).fill_null(0))
        bad = np.flatnonzero(lengths != spec.length)
        if len(bad):
            where.findings.add("wrong_list_length", spec.column, len(bad), where.file, where.rows(bad),
                               summary={"expected": spec.length, "found": sorted({int(v) for v in lengths[bad][:5]})})
            good = lengths == spec.length
            array = array.filter(pa.array(good))
            base = row_index if row_index is not None else where.first_row + np.arange(len(lengths))
            where.row_index = base[good]
    flat = array.flatten()
    if flat.null_count:
        accumulator.null_values += flat.null_count
        rows = np.unique(np.flatnonzero(~np.asarray(flat.is_valid())) // spec.length)
        where.findings.add("missing_values", spec.column, flat.null_count, where.file, where.rows(rows),
                           kind="null list element")
        flat = flat.fill_null(np.nan if pa.types.is_floating(flat.type) else 0)
    values = flat.to_numpy(zero_copy_only=False)
    # Float groups are binned on their float32 bits; integer groups keep their own width so
    # a wrong-typed value (binary 256 stored as int64) is not hidden by a narrowing cast.
    if spec.dtype == "float32" and values.dtype != np.float32:
        values = values.astype(np.float32)
    return values.reshape(-1, spec.length)
