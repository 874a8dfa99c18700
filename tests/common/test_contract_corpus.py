"""A corpus of broken raw inputs, generated here, run through `recap validate` and `recap convert`.

Per case: both steps give the same verdict and exit code (0 ok, 1 data, 2 usage), convert's
one-line error names the file (and row and column where there is one) and a rule validate also
reports as an error, and convert publishes nothing (no manifest, no shard) on failure.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from components.cli import main
from components.common.schema import Role, Schema, load_schema
from tests.convert.rawdata import make_table

SCHEMA = load_schema("local")
ROWS = 200


def clean_table(schema: Schema = SCHEMA, rows: int = ROWS, seed: int = 0) -> pa.Table:
    """make_table's rows, inside the contract: non-negative IDs, finite floats."""
    table = make_table(schema, rows, seed)
    for spec in schema.features:
        index = table.schema.get_field_index(spec.column)
        if spec.role == Role.ID:
            values = np.abs(table.column(spec.column).to_numpy())
            table = table.set_column(index, spec.column, pa.array(values, type=spec.arrow_type))
        elif spec.role == Role.CONTINUOUS:
            flat = table.column(spec.column).combine_chunks().flatten().to_numpy(zero_copy_only=False).copy()
            flat[~np.isfinite(flat)] = 0.0
            array = pa.FixedSizeListArray.from_arrays(pa.array(flat, type=spec.arrow_value_type), spec.length)
            table = table.set_column(index, spec.column, array)
    return table


def _replace(table: pa.Table, column: str, array: pa.Array) -> pa.Table:
    return table.set_column(table.schema.get_field_index(column), column, array)


def _group(spec_name: str, values: np.ndarray, nulls: np.ndarray | None = None, row_nulls: np.ndarray | None = None):
    spec = SCHEMA.get(spec_name)
    flat = pa.array(values.reshape(-1), type=spec.arrow_value_type, mask=None if nulls is None else nulls.reshape(-1))
    return pa.FixedSizeListArray.from_arrays(flat, spec.length, mask=None if row_nulls is None else pa.array(row_nulls))


def _floats(column: str, table: pa.Table) -> np.ndarray:
    spec = next(s for s in SCHEMA.features if s.column == column)
    return table.column(column).combine_chunks().flatten().to_numpy(zero_copy_only=False).reshape(-1, spec.length).copy()


CONT = SCHEMA.group(Role.CONTINUOUS)
EMB = SCHEMA.embeddings[0]
BIN = SCHEMA.group(Role.BINARY)
LABEL = SCHEMA.labels[0]
ID = SCHEMA.ids[0]


def null_element(t: pa.Table) -> pa.Table:
    values = _floats(CONT.column, t)
    nulls = np.zeros_like(values, dtype=bool)
    nulls[17, 1] = True
    return _replace(t, CONT.column, _group(CONT.name, values, nulls))


def null_row(t: pa.Table) -> pa.Table:
    rows = np.zeros(len(t), dtype=bool)
    rows[23] = True
    return _replace(t, CONT.column, _group(CONT.name, _floats(CONT.column, t), row_nulls=rows))


def nan_share(t: pa.Table) -> pa.Table:
    values = _floats(CONT.column, t)
    values[40:80, 2] = np.nan  # 20% of one element, far above max_non_finite_share
    return _replace(t, CONT.column, _group(CONT.name, values))


def inf_embedding(t: pa.Table) -> pa.Table:
    values = _floats(EMB.column, t)
    values[31, 0] = np.inf
    return _replace(t, EMB.column, _group(EMB.name, values))


def labels_0_to_9(t: pa.Table) -> pa.Table:
    return _replace(t, LABEL.column, pa.array(np.arange(len(t)) % 10, type=LABEL.arrow_type))


def null_label(t: pa.Table) -> pa.Table:
    values = t.column(LABEL.column).to_numpy()
    return _replace(t, LABEL.column, pa.array(values, type=LABEL.arrow_type, mask=np.arange(len(t)) == 5))


def negative_id(t: pa.Table) -> pa.Table:
    values = t.column(ID.column).to_numpy().copy()
    values[44] = -3
    return _replace(t, ID.column, pa.array(values, type=ID.arrow_type))


def binary_3(t: pa.Table) -> pa.Table:
    values = _floats(BIN.column, t)
    values[12, 0] = 3
    return _replace(t, BIN.column, _group(BIN.name, values))


def wrong_length(t: pa.Table) -> pa.Table:
    values = _floats(CONT.column, t)[:, :-1]
    flat = pa.array(values.reshape(-1), type=CONT.arrow_value_type)
    return _replace(t, CONT.column, pa.FixedSizeListArray.from_arrays(flat, CONT.length - 1))


def short_variable_row(t: pa.Table) -> pa.Table:
    lists = [list(row) for row in _floats(CONT.column, t)]
    lists[9] = lists[9][:-2]
    return t.set_column(t.schema.get_field_index(CONT.column), pa.field(CONT.column, pa.list_(CONT.arrow_value_type)),
                        pa.array(lists, type=pa.list_(CONT.arrow_value_type)))


def string_label(t: pa.Table) -> pa.Table:
    return t.set_column(t.schema.get_field_index(LABEL.column), pa.field(LABEL.column, pa.string()),
                        pa.array([str(v) for v in t.column(LABEL.column).to_pylist()]))


@dataclass(frozen=True)
class Case:
    name: str
    build: Callable[[Path], Path]  # writes the input under a folder, returns the --input path
    exit_code: int
    code: str | None = None  # the rule convert names (and validate reports as an error)
    names_row: bool = False
    column: str | None = None


def files(*tables: pa.Table | bytes | None, names: tuple[str, ...] = ()) -> Callable[[Path], Path]:
    def build(root: Path) -> Path:
        raw = root / "raw"
        raw.mkdir()
        for index, table in enumerate(tables):
            path = raw / (names[index] if names else f"part-{index}.parquet")
            if isinstance(table, bytes):
                path.write_bytes(table)
            else:
                pq.write_table(table, path)
        return raw
    return build


def mutated(change: Callable[[pa.Table], pa.Table]) -> Callable[[Path], Path]:
    return lambda root: files(clean_table(seed=1), change(clean_table()))(root)


def truncated(root: Path) -> Path:
    raw = files(clean_table())(root)
    data = (raw / "part-0.parquet").read_bytes()
    (raw / "part-0.parquet").write_bytes(data[: len(data) // 2])
    return raw


def renamed_after_manifest(root: Path) -> Path:
    from tests.convert.rawdata import write_raw

    raw = root / "raw"
    write_raw(SCHEMA, str(raw), 100, files=2)
    shutil.move(raw / "part-00001.parquet", raw / "part-00001.renamed.parquet")
    return raw


def empty_dir(root: Path) -> Path:
    (root / "raw").mkdir()
    return root / "raw"


CASES = [
    Case("clean", files(clean_table()), 0),
    Case("extra_column", files(clean_table().append_column("surprise", pa.array(np.zeros(ROWS)))), 0),
    Case("missing_column", mutated(lambda t: t.drop_columns([LABEL.column])), 1, "missing_column", column=LABEL.column),
    Case("wrong_type", mutated(string_label), 1, "wrong_type", column=LABEL.column),
    Case("wrong_list_length", mutated(wrong_length), 1, "wrong_list_length", column=CONT.column),
    Case("short_variable_list_row", mutated(short_variable_row), 1, "wrong_list_length", True, CONT.column),
    Case("null_list_element", mutated(null_element), 1, "missing_values", True, CONT.column),
    Case("null_list", mutated(null_row), 1, "missing_values", True, CONT.column),
    Case("null_label", mutated(null_label), 1, "label_null", True, LABEL.column),
    Case("nan_share", mutated(nan_share), 1, "non_finite", True, CONT.column),
    Case("inf_in_embedding", mutated(inf_embedding), 1, "non_finite", True, EMB.column),
    Case("labels_0_to_9", mutated(labels_0_to_9), 1, "label_not_binary", True, LABEL.column),
    Case("negative_id", mutated(negative_id), 1, "invalid_id", True, ID.column),
    Case("binary_3", mutated(binary_3), 1, "binary_out_of_range", True, BIN.column),
    Case("mixed_schemas", files(clean_table(), clean_table(seed=2).drop_columns([CONT.column])), 1, "missing_column",
         column=CONT.column),
    Case("empty_dir", empty_dir, 1, "empty_input"),
    Case("zero_rows", files(clean_table(rows=0)), 1, "empty_input"),
    Case("zero_byte_file", files(b""), 1, "unreadable_file"),
    Case("truncated_file", truncated, 1, "unreadable_file"),
    Case("renamed_after_manifest", renamed_after_manifest, 1, "unreadable_file"),
    Case("nonexistent_path", lambda root: root / "no-such-dir", 2),
]


def _run(capsys, *argv: str) -> tuple[int, str]:
    """`recap ...` in this process (as fast as a function call, with the CLI's own error mapping)."""
    root = logging.getLogger()
    try:
        code = main(list(argv))
    finally:  # the router's log handler holds this test's captured stderr: drop it with the test
        for handler in [h for h in root.handlers if getattr(h, "_recap", False)]:
            root.removeHandler(handler)
    return code, capsys.readouterr().err


def _published(out: Path) -> list[str]:
    return sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()) if out.exists() else []


# The generated labels are 30% positive: the statistical positive-rate rule (not part of the
# contract) is opened up; every contract threshold keeps the shipped value.
CONFIG = "max_missing_share: 0.0\nmax_non_finite_share: 0.02\npositive_rate: {min: 0.0, max: 1.0}\n"


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_validate_and_convert_agree_on_each_bad_input(case: Case, tmp_path: Path, capsys) -> None:
    source = str(case.build(tmp_path))
    config = tmp_path / "validation.yaml"
    config.write_text(CONFIG)
    v_code, v_err = _run(capsys, "validate", "--input", source, "--out", str(tmp_path / "validation"),
                         "--config_path", str(config))
    out = tmp_path / "converted"
    c_code, c_err = _run(capsys, "convert", "--input", source, "--out", str(out), "--shards", "2", "--workers", "1",
                         "--validation-config", str(config))
    assert (v_code, c_code) == (case.exit_code, case.exit_code), (v_err, c_err)
    if case.exit_code == 0:
        assert (out / "train" / "_MANIFEST.json").exists()
        return
    for err in (v_err, c_err):
        lines = [line for line in err.splitlines() if "error:" in line]
        assert len(lines) == 1 and "Traceback" not in err, err
    assert _published(out) == [], "convert published something on failure"
    if case.code is None:
        return
    assert c_err.rstrip().endswith(f"[{case.code}]"), c_err
    anomalies = json.loads((tmp_path / "validation" / "anomalies.json").read_text())["anomalies"]
    assert case.code in {a["code"] for a in anomalies if a["severity"] == "error"}
    assert "first: " in v_err and case.code in v_err
    if case.code not in ("empty_input",):
        named = re.search(r"(\S+\.parquet)", c_err)
        assert named and Path(named.group(1)).name.startswith("part-"), c_err
        assert Path(named.group(1)).name in v_err, v_err
    if case.column:
        assert repr(case.column) in c_err and repr(case.column) in v_err
    if case.names_row:
        assert re.search(r"row \d+", c_err) and re.search(r"row \d+", v_err), (c_err, v_err)


def test_skip_checks_converts_what_only_value_rules_reject(tmp_path: Path, capsys) -> None:
    """`--skip-checks` trusts an earlier validate for value rules; structural ones (nulls) still stop convert."""
    (tmp_path / "labels").mkdir()
    (tmp_path / "nulls").mkdir()
    labels = str(mutated(labels_0_to_9)(tmp_path / "labels"))
    code, err = _run(capsys, "convert", "--input", labels, "--out", str(tmp_path / "a"), "--workers", "1",
                     "--skip-checks")
    assert code == 0, err
    nulls = str(mutated(null_element)(tmp_path / "nulls"))
    code, err = _run(capsys, "convert", "--input", nulls, "--out", str(tmp_path / "b"), "--workers", "1",
                     "--skip-checks")
    assert code == 1 and err.rstrip().endswith("[missing_values]"), err


@pytest.mark.integration
def test_convert_subprocess_error_is_one_line_naming_file_row_column(tmp_path: Path) -> None:
    """The real CLI in a process, with worker processes: one stderr line, exit 1, nothing published."""
    source = mutated(labels_0_to_9)(tmp_path)
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, "-m", "components.cli", "convert", "--input", str(source), "--out", str(out),
                           "--shards", "4", "--workers", "2"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stderr
    lines = [line for line in done.stderr.splitlines() if " INFO " not in line and line.strip()]
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert re.search(rf"part-1\.parquet: row \d+: column '{LABEL.column}' has value \d .*\[label_not_binary\]$",
                     lines[0]), lines[0]
    assert _published(out) == []
