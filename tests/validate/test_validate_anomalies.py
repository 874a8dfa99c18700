"""Every anomaly code fires on a small crafted input, naming the right column, file and row."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from components.validate import CODES, load_validation_config, run

BUNDLED = load_validation_config(None)  # configs/validation.yaml


def _set(table: pa.Table, name: str, array: pa.Array) -> pa.Table:
    return table.set_column(table.schema.get_field_index(name), name, array)


def _matrix(table: pa.Table, name: str) -> np.ndarray:
    column = table.column(name).combine_chunks()
    return column.flatten().to_numpy().reshape(len(column), -1).copy()


def _fixed(values: np.ndarray, value_type: pa.DataType) -> pa.Array:
    return pa.FixedSizeListArray.from_arrays(pa.array(values.ravel(), type=value_type), values.shape[1])


def _scalar(table: pa.Table, name: str, row: int, value, value_type: pa.DataType | None = None) -> pa.Table:
    values = table.column(name).to_numpy().copy()
    values[row] = value
    return _set(table, name, pa.array(values, type=value_type or pa.int8()))


# Each case: (write_files, clean_data, clean_table, tmp_path) -> (input, column, file name, row)
def case_empty_input(write, clean_data, table, tmp):
    return write({"empty.parquet": table.slice(0, 0)}), None, "empty.parquet", None


def case_not_parquet(write, clean_data, table, tmp):
    return write({"part.parquet": table, "notes.csv": b"a,b\n1,2\n"}), None, "notes.csv", None


def case_unreadable_file(write, clean_data, table, tmp):
    return write({"part.parquet": table, "broken.parquet": b"PAR1 this is not parquet"}), None, "broken.parquet", None


def case_unlisted_file(write, clean_data, table, tmp):
    root = tmp / "with-manifest"
    shutil.copytree(clean_data, root)
    shutil.copy(root / "part-00000-of-00002.parquet", root / "stray.parquet")
    return str(root), None, "stray.parquet", None


def case_manifest_mismatch(write, clean_data, table, tmp):
    root = tmp / "with-manifest"
    shutil.copytree(clean_data, root)
    manifest = json.loads((root / "_MANIFEST.json").read_text())
    manifest["files"][1]["records"] += 1
    (root / "_MANIFEST.json").write_text(json.dumps(manifest))
    return str(root), None, "part-00001-of-00002.parquet", None


def case_missing_column(write, clean_data, table, tmp):
    return write({"p.parquet": table.drop_columns(["twhin_author_follow"])}), "twhin_author_follow", "p.parquet", None


def case_unexpected_column(write, clean_data, table, tmp):
    extra = table.append_column("debug_score", pa.array(np.zeros(len(table))))
    return write({"p.parquet": extra}), "debug_score", "p.parquet", None


def case_wrong_type(write, clean_data, table, tmp):
    values = _matrix(table, "twhin_user_follow").astype(np.float64)
    return write({"p.parquet": _set(table, "twhin_user_follow", _fixed(values, pa.float64()))}), \
        "twhin_user_follow", "p.parquet", None


def case_variable_size_list(write, clean_data, table, tmp):
    binary = table.column("binary").combine_chunks().cast(pa.list_(pa.int8()))
    return write({"p.parquet": _set(table, "binary", binary)}), "binary", "p.parquet", None


def case_wrong_list_length(write, clean_data, table, tmp):
    rows = _matrix(table, "continuous").tolist()
    rows[3] = rows[3][:-1]
    return write({"p.parquet": _set(table, "continuous", pa.array(rows, type=pa.list_(pa.float32())))}), \
        "continuous", "p.parquet", 3


def case_missing_values(write, clean_data, table, tmp):
    values = _matrix(table, "continuous")
    mask = np.zeros(len(values), dtype=bool)
    mask[4] = True
    column = pa.FixedSizeListArray.from_arrays(pa.array(values.ravel(), type=pa.float32()), 64, mask=pa.array(mask))
    return write({"p.parquet": _set(table, "continuous", column)}), "continuous", "p.parquet", 4


def case_non_finite(write, clean_data, table, tmp):
    values = _matrix(table, "continuous")
    values[::2, 5] = np.nan  # half of element 5
    return write({"p.parquet": _set(table, "continuous", _fixed(values, pa.float32()))}), \
        "continuous", "p.parquet", 0


def case_binary_out_of_range(write, clean_data, table, tmp):
    values = _matrix(table, "binary")
    values[6, 2] = 3
    return write({"p.parquet": _set(table, "binary", _fixed(values, pa.int8()))}), "binary", "p.parquet", 6


def case_label_not_binary(write, clean_data, table, tmp):
    return write({"p.parquet": _scalar(table, "is_favorited", 7, 2)}), "is_favorited", "p.parquet", 7


def case_label_null(write, clean_data, table, tmp):
    values = table.column("is_replied").to_pylist()
    values[8] = None
    return write({"p.parquet": _set(table, "is_replied", pa.array(values, type=pa.int8()))}), \
        "is_replied", "p.parquet", 8


def case_invalid_id(write, clean_data, table, tmp):
    return write({"p.parquet": _scalar(table, "user_id", 9, -5, pa.int64())}), "user_id", "p.parquet", 9


def case_constant_column(write, clean_data, table, tmp):
    constant = pa.array(np.full(len(table), 42, dtype=np.int64))
    return write({"p.parquet": _set(table, "tweet_id", constant)}), "tweet_id", None, None


def case_positive_rate_out_of_bounds(write, clean_data, table, tmp):
    ones = pa.array(np.ones(len(table), dtype=np.int8))
    return write({"p.parquet": _set(table, "is_favorited", ones)}), "is_favorited", None, None


CASES = {name[len("case_"):]: fn for name, fn in globals().items() if name.startswith("case_")}
DRIFT_CODES = {"drift_categorical", "drift_numeric", "reference_mismatch"}  # test_validate_drift.py


def test_every_code_has_a_crafted_case() -> None:
    assert set(CASES) | DRIFT_CODES == set(CODES)


@pytest.mark.parametrize("code", sorted(CASES))
def test_code_is_reported_with_column_file_and_row(code, write_files, clean_data, clean_table, tmp_path,
                                                   local_schema) -> None:
    source, column, file_name, row = CASES[code](write_files, clean_data, clean_table, tmp_path)
    result = run(source, local_schema, str(tmp_path / "out"), BUNDLED)
    found = [a for a in result.anomalies if a.code == code and a.column == column]
    assert found, [(a.code, a.column, a.message) for a in result.anomalies]
    anomaly = found[0]
    assert anomaly.severity == CODES[code][0] and anomaly.count >= 1
    if file_name:
        assert any(str(e.get("file", "")).endswith(file_name) for e in anomaly.examples), anomaly
    if row is not None:
        assert any(e.get("row") == row and str(e["file"]).endswith(file_name) for e in anomaly.examples), anomaly
    errors = {a.code for a in result.anomalies if a.is_error}
    if CODES[code][0] == "warning":
        assert not errors, f"a warning-only input raised errors: {errors}"
    assert result.has_errors == bool(errors)
    written = json.loads(Path(result.anomalies_uri).read_text())
    assert any(a["code"] == code and a["column"] == column for a in written["anomalies"])


def test_non_finite_names_the_element(write_files, clean_table, tmp_path, local_schema) -> None:
    source, *_ = case_non_finite(write_files, None, clean_table, tmp_path)
    (anomaly,) = [a for a in run(source, local_schema, str(tmp_path / "out"), BUNDLED).anomalies if a.code == "non_finite"]
    assert anomaly.details["elements"] == [5] and anomaly.details["shares"][0] == pytest.approx(0.5, abs=0.01)


def test_rows_after_a_null_keep_their_file_row_numbers(write_files, clean_table, tmp_path, local_schema) -> None:
    """Dropping a null row must not shift the row numbers reported for later problems."""
    values = clean_table.column("is_favorited").to_pylist()
    values[2], values[10] = None, 2
    table = _set(clean_table, "is_favorited", pa.array(values, type=pa.int8()))
    result = run(write_files({"p.parquet": table}), local_schema, str(tmp_path / "out"), BUNDLED)
    by_code = {a.code: a for a in result.anomalies}
    assert [e["row"] for e in by_code["label_null"].examples] == [2]
    assert [e["row"] for e in by_code["label_not_binary"].examples] == [10]


def test_severity_override_from_config(write_files, clean_table, tmp_path, local_schema) -> None:
    from components.validate import ValidationConfig

    source = write_files({"part.parquet": clean_table, "notes.txt": b"hello"})
    result = run(source, local_schema, str(tmp_path / "out"), ValidationConfig(severity={"not_parquet": "error"}))
    assert result.has_errors and [a.code for a in result.errors] == ["not_parquet"]


def test_wrong_width_values_are_still_checked(write_files, clean_table, tmp_path, local_schema) -> None:
    """binary stored as int64 with a 256: the type is wrong and the value is not hidden by a cast."""
    values = _matrix(clean_table, "binary").astype(np.int64)
    values[11, 0] = 256
    source = write_files({"p.parquet": _set(clean_table, "binary", _fixed(values, pa.int64()))})
    found = {(a.code, a.column): a for a in run(source, local_schema, str(tmp_path / "out"), BUNDLED).anomalies}
    assert ("wrong_type", "binary") in found
    assert [e["row"] for e in found[("binary_out_of_range", "binary")].examples] == [11]


def test_an_empty_directory_is_empty_input(tmp_path, local_schema) -> None:
    (tmp_path / "in").mkdir()
    result = run(str(tmp_path / "in"), local_schema, str(tmp_path / "out"), BUNDLED)
    assert [(a.code, a.severity) for a in result.anomalies] == [("empty_input", "error")]
    assert Path(result.report_uri).exists()
