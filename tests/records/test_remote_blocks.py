"""gs:// packed shards read in place through the GCS emulator, block by block: the same batches as
the local copy, resumable mid-block, and a damaged or missing block named before its rows are used."""

from __future__ import annotations

import hashlib
import itertools
import os
from pathlib import Path

import pytest

from components.common import storage
from components.common.errors import DataError
from components.common.manifest import read_manifest
from components.common.schema import load_schema
from components.convert import ConvertSettings, run
from components.records import remote
from components.records.reader import ReaderOptions, read_batches
from tests.convert.rawdata import write_raw
from tests.records.test_packed_layout import assert_same_batches

SCHEMA = load_schema("local")
SMALL_BLOCK = 5000  # bytes: several blocks per test shard, record frames straddling block boundaries


@pytest.fixture
def small_blocks(monkeypatch):
    monkeypatch.setattr(storage, "BLOCK_BYTES", SMALL_BLOCK)


@pytest.fixture
def splits(tmp_path, gcs_bucket, small_blocks):
    """A packed split written locally, and the same files uploaded to the emulator."""
    raw = tmp_path / "raw"
    write_raw(SCHEMA, str(raw), rows=300, files=1, row_group_size=64, manifest=False)
    run(str(raw), SCHEMA, str(tmp_path / "packed"),
        ConvertSettings(shards=3, workers=1, layout="packed", eval_fraction=0.0))
    local = tmp_path / "packed" / "train"
    remote_split = f"{gcs_bucket}/packed/train"
    for path in sorted(local.iterdir()):
        storage.upload(str(path), f"{remote_split}/{path.name}")
    return str(local), remote_split


def test_block_hashes_cover_every_byte_once(tmp_path, small_blocks):
    data = os.urandom(SMALL_BLOCK * 2 + 1234)
    with storage.open_write(str(tmp_path / "f"), block_hashes=True) as out:
        for at in range(0, len(data), 777):  # writes that straddle block boundaries
            out.write(data[at : at + 777])
    expected = [hashlib.sha256(data[at : at + SMALL_BLOCK]).hexdigest() for at in range(0, len(data), SMALL_BLOCK)]
    assert list(out.block_sha256) == expected and out.sha256 == hashlib.sha256(data).hexdigest()


def test_gs_shards_stream_the_local_batches_in_the_same_order_and_resume_mid_block(splits, monkeypatch):
    local, gcs = splits
    entries = read_manifest(gcs)[0].files
    assert all(remote.streamable(e) and len(e.block_sha256) > 3 for e in entries)
    downloads = []
    monkeypatch.setattr(storage, "download", lambda *a, **k: downloads.append(a))  # the spooling path
    options = ReaderOptions(batch_size=40, shuffle=True, seed=5, num_parallel_reads=2, repeat=True)
    want = list(itertools.islice(read_batches(local, SCHEMA, options), 12))
    assert_same_batches(list(itertools.islice(read_batches(gcs, SCHEMA, options), 12)), want)
    assert_same_batches(list(itertools.islice(read_batches(gcs, SCHEMA, options, start_batch=5), 7)), want[5:])
    assert downloads == []


def test_a_damaged_block_is_named_before_its_rows_are_used(splits):
    _, gcs = splits
    manifest, _ = read_manifest(gcs)
    entry = manifest.files[0]
    uri = f"{gcs}/{entry.path}"
    data = bytearray(storage.read_bytes(uri))
    data[SMALL_BLOCK * 2 + 10] ^= 0x01  # block 2; the manifest is left as it was
    storage.write_bytes(uri, bytes(data))
    options = ReaderOptions(batch_size=1, shuffle=False, num_parallel_reads=1)
    frame = len(data) // entry.records
    used = []
    with pytest.raises(DataError, match=rf"{entry.path}: bytes {SMALL_BLOCK * 2}-{SMALL_BLOCK * 3 - 1} \(block 2\) "
                                        r"differ from the manifest's sha256"):
        for batch in read_batches(gcs, SCHEMA, options):
            used.append(batch)
    # no row whose bytes reach into block 2 was handed out
    assert len(used) <= (SMALL_BLOCK * 2) // frame


def test_a_missing_shard_is_named(splits):
    _, gcs = splits
    entry = read_manifest(gcs)[0].files[1]
    storage.delete(f"{gcs}/{entry.path}")
    with pytest.raises(DataError, match=rf"{entry.path}: listed in the manifest but missing"):
        list(read_batches(gcs, SCHEMA, ReaderOptions(batch_size=64, shuffle=False)))


def test_skip_corrupt_reads_through_the_verified_download_and_skips_the_shard(splits):
    _, gcs = splits
    entry = read_manifest(gcs)[0].files[0]
    uri = f"{gcs}/{entry.path}"
    data = bytearray(storage.read_bytes(uri))
    data[-20] ^= 0x01
    storage.write_bytes(uri, bytes(data))
    rows = sum(b.batch_size for b in read_batches(gcs, SCHEMA, ReaderOptions(batch_size=16, skip_corrupt=True)))
    assert rows == read_manifest(gcs)[0].total_records - entry.records


def test_a_shard_written_without_block_hashes_still_reads(splits, tmp_path):
    local, gcs = splits
    manifest_uri = f"{gcs}/_MANIFEST.json"
    document = storage.read_json(manifest_uri)
    for entry in document["files"]:
        entry.pop("block_sha256")
    storage.write_json(manifest_uri, document)
    options = ReaderOptions(batch_size=50, shuffle=False)
    assert_same_batches(list(read_batches(gcs, SCHEMA, options)), list(read_batches(local, SCHEMA, options)))
    assert Path(local).exists()
