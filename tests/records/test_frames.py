"""Uncompressed packed shards read as numpy frames: the same batches as the TensorFlow path, in the
same order, resumable, with a damaged record or a bad value named by shard and record."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from components.common.errors import DataError
from components.common.manifest import read_manifest
from components.common.schema import load_schema
from components.convert import ConvertSettings, run
from components.records import reader
from components.records.layout import PackedRecord, RecordLayout
from components.records.reader import ReaderOptions, read_batches
from tests.convert.rawdata import write_raw
from tests.records.test_packed_layout import assert_same_batches
from tests.records.test_sample_check import LABEL, break_column

SCHEMA = load_schema("local")


def packed_split(tmp_path, rows=530, shards=5, broken=None):
    raw = tmp_path / "raw"
    write_raw(SCHEMA, str(raw), rows=rows, files=2, row_group_size=64, manifest=False)
    if broken:
        break_column(raw, *broken)
    out = tmp_path / "packed"
    run(str(raw), SCHEMA, str(out), ConvertSettings(shards=shards, workers=1, layout="packed", eval_fraction=0.0,
                                                   check_values=broken is None))
    return str(out / "train")


@pytest.fixture(scope="module")
def split(tmp_path_factory):
    return packed_split(tmp_path_factory.mktemp("frames"))


def through_tensorflow(monkeypatch):
    monkeypatch.setattr(reader._Layout, "reads_frames", lambda self, compression: False)


@pytest.mark.parametrize(("batch_size", "cycle", "shuffle", "drop"), [(64, 2, True, False), (37, 4, False, True),
                                                                      (500, 3, True, False)])
def test_the_frame_path_yields_the_tensorflow_paths_batches(split, monkeypatch, batch_size, cycle, shuffle, drop):
    options = ReaderOptions(batch_size=batch_size, shuffle=shuffle, seed=3, num_parallel_reads=cycle,
                            drop_remainder=drop)
    frames = list(read_batches(split, SCHEMA, options))
    with monkeypatch.context() as patch:
        through_tensorflow(patch)
        tensorflow = list(read_batches(split, SCHEMA, options))
    assert_same_batches(frames, tensorflow)
    assert sum(b.batch_size for b in frames) == (530 // batch_size * batch_size if drop else 530)


def test_batches_spanning_many_small_chunks_are_the_same(split, monkeypatch):
    """Chunk buffers are reused in turn: a batch made of pieces of several chunks must not see one overwritten."""
    from components.records import frames

    options = ReaderOptions(batch_size=64, shuffle=True, seed=1, num_parallel_reads=3)
    want = list(read_batches(split, SCHEMA, options))
    monkeypatch.setattr(frames, "CHUNK_ROWS", 7)
    assert_same_batches(list(read_batches(split, SCHEMA, options)), want)


def test_resume_at_a_batch_continues_with_exactly_the_next_rows(split):
    options = ReaderOptions(batch_size=48, shuffle=True, seed=7, num_parallel_reads=2, repeat=True)
    whole = list(itertools.islice(read_batches(split, SCHEMA, options), 30))  # past the end of an epoch
    for start in (1, 11, 12, 23):
        resumed = list(itertools.islice(read_batches(split, SCHEMA, options, start_batch=start), 30 - start))
        assert_same_batches(resumed, whole[start:])


def test_ranks_read_disjoint_shards_and_together_every_row_once(split):
    options = ReaderOptions(batch_size=16, shuffle=True, num_parallel_reads=2)
    seen = []
    for rank in range(2):
        for batch in read_batches(split, SCHEMA, options, rank=rank, world_size=2):
            seen += batch.sparse_features.values().view(len(SCHEMA.ids), -1)[0].tolist()
    assert len(seen) == 530 and len(set(seen)) == len(set(seen))


def test_a_bad_label_is_named_by_shard_and_record(tmp_path):
    split = packed_split(tmp_path, rows=200, shards=2, broken=(LABEL.column, 70, 7))
    with pytest.raises(DataError) as err:
        for _ in read_batches(split, SCHEMA, ReaderOptions(batch_size=32, shuffle=True)):
            pass
    message = str(err.value)
    assert f"column {LABEL.column!r}" in message and "[label_not_binary]" in message
    shard, record = message.split(": record ")[0], int(message.split(": record ")[1].split(":")[0])
    record_bytes = PackedRecord.of(RecordLayout.from_extra(read_manifest(split)[0].extra), SCHEMA)
    frame = record_bytes.size + 16
    data = Path(shard).read_bytes()[record * frame + 12 : (record + 1) * frame - 4]
    _, at, size = next(slot for slot in record_bytes.slots if slot[0].part == "labels")
    assert 7 in np.frombuffer(data[at : at + size], "u1")


def test_a_record_of_another_shape_is_named_even_when_the_manifest_was_rewritten(tmp_path):
    """Sha256 and size match (the manifest was rewritten for the damaged file), the frame structure does not."""
    import hashlib

    split = packed_split(tmp_path, rows=100, shards=1)
    manifest_path = Path(split) / "_MANIFEST.json"
    manifest = json.loads(manifest_path.read_text())
    entry = manifest["files"][0]
    shard = Path(split) / entry["path"]
    data = bytearray(shard.read_bytes())
    frame = len(data) // entry["records"]
    data[3 * frame + 14] ^= 0xFF  # a header byte of record 3 (inside the Example's first key)
    shard.write_bytes(bytes(data))
    entry["sha256"] = hashlib.sha256(bytes(data)).hexdigest()
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(DataError, match=rf"{entry['path']}: record 3: not a record of this packed layout"):
        list(read_batches(split, SCHEMA, ReaderOptions(batch_size=16, shuffle=False)))


def test_reading_a_packed_split_does_not_import_tensorflow(split):
    code = (
        "import sys\n"
        "from components.common.schema import load_schema\n"
        "from components.records.reader import ReaderOptions, read_batches\n"
        f"print(sum(b.batch_size for b in read_batches({split!r}, load_schema('local'), ReaderOptions(batch_size=64))))\n"
        "assert 'tensorflow' not in sys.modules, 'TensorFlow was imported'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert int(done.stdout) == 530
