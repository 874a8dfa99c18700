"""The one raw-input lister: validate and convert read exactly the same files."""

from __future__ import annotations

import pytest

from components.common import storage
from components.common.errors import StorageError
from components.common.manifest import ManifestFile, write_manifest
from components.common.raw_inputs import list_raw_inputs
from components.common.schema import load_schema
from components.convert import ConvertSettings
from components.convert import run as convert
from components.validate import load_validation_config
from components.validate import run as validate
from tests.convert.rawdata import make_table


def test_every_parquet_suffix_is_data_and_markers_are_not(storage_root):
    for name in ("a.pq", "b.parquet", "sub/c.parq", "notes.txt", "_SUCCESS", ".a.pq.crc"):
        storage.write_text(storage.join(storage_root, name), "x")
    inputs = list_raw_inputs(storage_root)
    names = [storage.relative_to(u, storage_root) for u in inputs.files]
    assert names == ["a.pq", "b.parquet", "sub/c.parq"] and not inputs.from_manifest
    assert [storage.basename(u) for u in inputs.other] == ["notes.txt"] and inputs.unlisted == ()


def test_a_manifest_decides_and_the_rest_is_reported_as_unlisted(tmp_path):
    root = str(tmp_path)
    for name in ("listed.pq", "stray.parquet", "oracle.json"):
        storage.write_text(storage.join(root, name), "x")
    write_manifest(root, "raw-parquet", "h", [ManifestFile("listed.pq", 1, 1, "s")])
    for where in (root, storage.join(root, "_MANIFEST.json")):
        inputs = list_raw_inputs(where)
        assert inputs.from_manifest and [storage.basename(u) for u in inputs.files] == ["listed.pq"]
        assert [storage.basename(u) for u in inputs.unlisted] == ["stray.parquet"]
        assert [storage.basename(u) for u in inputs.other] == ["oracle.json"]


def test_a_missing_input_is_one_storage_error(tmp_path):
    for missing in (tmp_path / "nothing", tmp_path / "x.pq"):
        with pytest.raises(StorageError, match="input not found"):
            list_raw_inputs(str(missing))


def test_pq_input_that_passes_validation_also_converts(tmp_path):
    import pyarrow.parquet as pq

    schema = load_schema("local")
    raw = tmp_path / "raw"
    raw.mkdir()
    pq.write_table(make_table(schema, 120), raw / "part-0.pq")
    result = validate(str(raw), schema, str(tmp_path / "validation"), load_validation_config(None))
    assert result.rows == 120 and not any(a.code in ("empty_input", "not_parquet") for a in result.anomalies)
    converted = convert(str(raw), schema, str(tmp_path / "data"), ConvertSettings(shards=1, workers=1))
    assert converted.rows == 120
