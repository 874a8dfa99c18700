"""`convert.run`: exact rows, disjoint splits, manifests last, byte-identical reruns, clear errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from components.cli import main as recap_main
from components.common.errors import DataError
from components.common.manifest import read_manifest, sha256_of
from components.common.schema import load_schema
from components.convert import ConvertSettings, run
from components.convert.plan import eval_mask
from components.records.layout import tf_feature_spec
from tests.convert.rawdata import make_table, row_fingerprints, table_columns, write_raw

tf = pytest.importorskip("tensorflow")

SCHEMA = load_schema("local")


def read_split(split_uri: str, schema=SCHEMA) -> dict[str, np.ndarray]:
    """Every record of a split, parsed by TensorFlow (independent of our reader)."""
    manifest, directory = read_manifest(split_uri)
    files = manifest.uris(directory)
    names = {spec.feature: spec.name for spec in schema.features}
    out = {spec.name: [] for spec in schema.features}
    dataset = tf.data.TFRecordDataset(files, compression_type="GZIP").batch(512)
    for batch in dataset.map(lambda r: tf.io.parse_example(r, tf_feature_spec(schema))):
        for feature, values in batch.items():
            out[names[feature]].append(values.numpy())
    return {name: np.concatenate(parts) if parts else np.zeros((0, schema.get(name).length))
            for name, parts in out.items()}


def convert(tmp_path: Path, rows: int = 600, **settings) -> tuple[pa.Table, object]:
    raw = str(tmp_path / "raw")
    table = write_raw(SCHEMA, raw, rows=rows, files=3, row_group_size=50)
    defaults = {"shards": 3, "workers": 1, "eval_fraction": 0.25}
    result = run(raw, SCHEMA, str(tmp_path / "out"), ConvertSettings(**{**defaults, **settings}))
    return table, result


def test_splits_hold_exactly_the_source_rows_and_users_never_cross(tmp_path):
    table, result = convert(tmp_path)
    train, evals = read_split(str(tmp_path / "out/train")), read_split(str(tmp_path / "out/eval"))
    both = {name: np.concatenate([train[name], evals[name]]) for name in train}
    assert row_fingerprints(SCHEMA, both) == row_fingerprints(SCHEMA, table_columns(SCHEMA, table))
    train_users = set(train["meta__user_id"].ravel().tolist())
    eval_users = set(evals["meta__user_id"].ravel().tolist())
    assert train_users and eval_users and not train_users & eval_users
    assert result.records == {"train": len(train["meta__user_id"]), "eval": len(evals["meta__user_id"])}


def test_manifests_describe_the_shards_they_list(tmp_path):
    _, result = convert(tmp_path)
    for split in ("train", "eval"):
        manifest, directory = read_manifest(result.manifest_uris[split])
        assert manifest.kind == "tfrecord" and manifest.schema_hash == SCHEMA.hash
        assert manifest.extra["split"] == split and manifest.extra["split_key"] == "user_id"
        assert manifest.extra["schema"] == "local" and manifest.extra["eval_fraction"] == 0.25
        assert [e.path for e in manifest.files] == [f"part-{i:05d}-of-00003.tfrecord.gz" for i in range(3)]
        for entry, uri in zip(manifest.files, manifest.uris(directory), strict=True):
            assert os.path.getsize(uri) == entry.bytes
            assert sha256_of(uri) == entry.sha256
            assert sum(1 for _ in tf.data.TFRecordDataset(uri, compression_type="GZIP")) == entry.records
        assert list(result.shard_uris[split]) == manifest.uris(directory)


def test_split_is_a_pure_function_of_the_key():
    keys = np.random.default_rng(1).integers(-(1 << 62), 1 << 62, 20_000)
    mask = eval_mask(keys, 0.2)
    assert 0.18 < mask.mean() < 0.22
    np.testing.assert_array_equal(mask, eval_mask(keys.copy(), 0.2))
    assert not eval_mask(keys, 0.0).any()
    # A larger fraction only moves keys into eval, never out of it.
    assert not (mask & ~eval_mask(keys, 0.5)).any()


@pytest.mark.parametrize("compressor", ["zlib", "isal"])
def test_same_input_gives_byte_identical_shards_whatever_the_worker_count(tmp_path, compressor):
    if compressor == "isal":
        pytest.importorskip("isal")
    raw = str(tmp_path / "raw")
    write_raw(SCHEMA, raw, rows=7000, files=2, row_group_size=300)  # > 1 MiB per shard: several chunks
    outputs = []
    for name, workers, batch_rows in (("one", 1, 256), ("two", 2, 256), ("again", 1, 77)):
        settings = ConvertSettings(shards=2, workers=workers, compressor=compressor, batch_rows=batch_rows)
        result = run(raw, SCHEMA, str(tmp_path / name), settings)
        assert result.manifests["train"].extra["compressor"].startswith(compressor)
        outputs.append({
            f"{split}/{Path(uri).name}": Path(uri).read_bytes()
            for split in ("train", "eval") for uri in result.shard_uris[split]
        })
    assert outputs[0] == outputs[1] == outputs[2]
    assert len(outputs[0]) == 4


def test_rerun_replaces_partial_output(tmp_path):
    stale = tmp_path / "out" / "train"
    stale.mkdir(parents=True)
    (stale / "part-00007-of-00009.tfrecord.gz").write_bytes(b"half a shard")
    (stale / "_MANIFEST.json").write_text(json.dumps({"kind": "tfrecord"}))
    _, result = convert(tmp_path)
    listed = {Path(u).name for u in result.shard_uris["train"]}
    assert {p.name for p in stale.iterdir()} == listed | {"_MANIFEST.json"}


def _with_null(table: pa.Table, column: str, row: int) -> pa.Table:
    index = table.schema.get_field_index(column)
    values = table.column(column).combine_chunks()
    mask = np.zeros(len(values), dtype=bool)
    mask[row] = True
    if pa.types.is_fixed_size_list(values.type):
        nulled = pa.FixedSizeListArray.from_arrays(values.flatten(), values.type.list_size, mask=pa.array(mask))
    else:
        nulled = pa.array(values.to_numpy(zero_copy_only=False), type=values.type, mask=mask)
    return table.set_column(index, table.field(index), nulled)


@pytest.mark.parametrize("column", ["continuous", "is_replied"])
def test_null_fails_naming_file_and_row_and_publishes_no_manifest(tmp_path, column):
    convert(tmp_path)  # a complete earlier output: it must not survive as "valid"
    table = make_table(SCHEMA, 120, seed=3)
    raw = tmp_path / "bad"
    raw.mkdir()
    pq.write_table(table.slice(0, 60), raw / "part-00000.parquet")
    pq.write_table(_with_null(table.slice(60, 60), column, 17), raw / "part-00001.parquet", row_group_size=8)
    with pytest.raises(DataError, match=rf"part-00001\.parquet: row 17: column '{column}' is null"):
        run(str(raw), SCHEMA, str(tmp_path / "out"), ConvertSettings(shards=2, workers=1))
    assert not (tmp_path / "out/train/_MANIFEST.json").exists()
    assert not (tmp_path / "out/eval/_MANIFEST.json").exists()


def test_corrupt_pages_behind_a_valid_footer_name_the_file(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    path = raw / "part-00000.parquet"
    pq.write_table(make_table(SCHEMA, 200, seed=5), path, row_group_size=50, compression="snappy")
    data = bytearray(path.read_bytes())
    footer = int.from_bytes(data[-8:-4], "little") + 8
    for offset in range(4, len(data) - footer, 7):  # scramble the pages, keep the footer
        data[offset] ^= 0x5A
    path.write_bytes(bytes(data))
    with pytest.raises(DataError, match=r"part-00000\.parquet: rows 0-200: unreadable Parquet data"):
        run(str(raw), SCHEMA, str(tmp_path / "out"), ConvertSettings(shards=1, workers=1))
    assert not (tmp_path / "out/train/_MANIFEST.json").exists()


def test_wrong_type_or_length_is_a_data_error(tmp_path):
    table = make_table(SCHEMA, 10)
    raw = tmp_path / "raw"
    raw.mkdir()
    pq.write_table(table.drop_columns(["tweet_id"]), raw / "a.parquet")
    with pytest.raises(DataError, match=r"a\.parquet: column 'tweet_id' .* is missing"):
        run(str(raw), SCHEMA, str(tmp_path / "out"), ConvertSettings(shards=1, workers=1))
    lists = [[1, 0] * 8] * 9 + [[1, 0] * 7]  # variable-length lists are accepted if lengths fit
    varied = table.set_column(table.schema.get_field_index("binary"), "binary", pa.array(lists, pa.list_(pa.int8())))
    (raw / "a.parquet").unlink()
    pq.write_table(varied, raw / "b.parquet")
    with pytest.raises(DataError, match=r"b\.parquet: row 9: column 'binary' has 14 values, schema says 16"):
        run(str(raw), SCHEMA, str(tmp_path / "out"), ConvertSettings(shards=1, workers=1))


def test_input_manifest_decides_which_files_are_converted(tmp_path):
    raw = tmp_path / "raw"
    write_raw(SCHEMA, str(raw), rows=90, files=2)
    pq.write_table(make_table(SCHEMA, 50, seed=9), raw / "part-00009.parquet")  # not listed
    result = run(str(raw), SCHEMA, str(tmp_path / "out"), ConvertSettings(shards=2, workers=1))
    assert sum(result.records.values()) == 90
    (raw / "_MANIFEST.json").unlink()
    result = run(str(raw), SCHEMA, str(tmp_path / "out"), ConvertSettings(shards=2, workers=1))
    assert sum(result.records.values()) == 140


def test_cli_exit_codes(tmp_path, capsys):
    raw = str(tmp_path / "raw")
    write_raw(SCHEMA, raw, rows=40, files=1)
    out = str(tmp_path / "out")
    assert recap_main(["convert", "--input", raw, "--out", out, "--shards", "2", "--workers", "1",
                       "--eval-fraction", "0.5"]) == 0
    assert "train:" in capsys.readouterr().out
    assert recap_main(["convert", "--input", str(tmp_path / "none"), "--out", out]) == 2
    assert recap_main(["convert", "--input", raw, "--out", out, "--split-key", "binary"]) == 2
    assert recap_main(["convert", "--input", raw, "--out", out, "--eval-fraction", "1.5"]) == 2


@pytest.mark.integration
def test_killed_conversion_leaves_no_manifest_and_a_rerun_completes(tmp_path):
    raw = str(tmp_path / "raw")
    write_raw(SCHEMA, raw, rows=30_000, files=2, row_group_size=500)
    out = tmp_path / "out"
    command = [sys.executable, "-m", "components.cli", "convert", "--input", raw, "--out", str(out),
               "--shards", "60", "--workers", "1"]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    try:
        while not list((out / "train").glob("part-*")):
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline, "no shard appeared"
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert not (out / "train/_MANIFEST.json").exists() and not (out / "eval/_MANIFEST.json").exists()
    result = run(raw, SCHEMA, str(out), ConvertSettings(shards=60, workers=1))
    assert sum(result.records.values()) == 30_000
    assert {p.name for p in (out / "train").iterdir()} == {
        Path(u).name for u in result.shard_uris["train"]} | {"_MANIFEST.json"}


@pytest.mark.integration
def test_cli_subprocess_with_forked_workers_matches_in_process_output(tmp_path):
    """`recap convert` holds no TensorFlow, so its workers fork; the shards must not change."""
    raw = str(tmp_path / "raw")
    write_raw(SCHEMA, raw, rows=500, files=2, row_group_size=40)
    expected = run(raw, SCHEMA, str(tmp_path / "here"), ConvertSettings(shards=3, workers=1))
    command = [sys.executable, "-m", "components.cli", "convert", "--input", raw, "--out",
               str(tmp_path / "cli"), "--shards", "3", "--workers", "2", "--log-level", "DEBUG"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "train: " in done.stdout and "rows_per_s=" in done.stderr
    assert "start_method=fork" in done.stderr
    for split in ("train", "eval"):
        for uri in expected.shard_uris[split]:
            assert (tmp_path / "cli" / split / Path(uri).name).read_bytes() == Path(uri).read_bytes()
