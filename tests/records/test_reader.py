"""The reader returns exactly the converted rows, per rank, resumably, and fails loudly on bad shards."""

from __future__ import annotations

import hashlib
import itertools
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from components.common import storage
from components.common.errors import DataError, SchemaError
from components.common.manifest import ManifestFile, read_manifest, write_manifest
from components.common.schema import load_schema, schema_path
from components.convert import ConvertSettings, run
from components.records.reader import ReaderOptions, count_records, read_batches
from components.records.shards import round_robin_offsets
from tests.convert.rawdata import make_table, table_columns, write_raw
from tests.records.batches import batch_columns, fingerprints

tf = pytest.importorskip("tensorflow")

SCHEMA = load_schema("local")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """600 local rows converted into 5 shards per split; the source table alongside."""
    root = tmp_path_factory.mktemp("reader")
    table = write_raw(SCHEMA, str(root / "raw"), rows=600, files=2, row_group_size=40)
    run(str(root / "raw"), SCHEMA, str(root / "out"), ConvertSettings(shards=5, workers=1, eval_fraction=0.25))
    return root / "out", table


def tweet_ids(batches) -> list[int]:
    return [int(v) for b in batches for v in b.sparse_features["meta__tweet_id"].values().tolist()]


def test_round_trip_returns_exactly_the_source_rows(storage_root):
    raw, out = storage.join(storage_root, "raw"), storage.join(storage_root, "out")
    table = write_raw(SCHEMA, raw, rows=300, files=2, row_group_size=40)
    result = run(raw, SCHEMA, out, ConvertSettings(shards=3, workers=2, eval_fraction=0.3))
    options = ReaderOptions(batch_size=64, num_parallel_reads=2)
    train = list(read_batches(storage.join(out, "train"), SCHEMA, options))
    evals = list(read_batches(result.manifest_uris["eval"], SCHEMA, options))
    assert sum(b.batch_size for b in train) == result.records["train"] == count_records(storage.join(out, "train"))
    got = {k: np.concatenate([a, b]) for (k, a), b in zip(
        batch_columns(SCHEMA, train).items(), batch_columns(SCHEMA, evals).values(), strict=True)}
    assert fingerprints(SCHEMA, got) == fingerprints(SCHEMA, table_columns(SCHEMA, table))


def test_weights_follow_the_downsampling_rates(tmp_path):
    data = yaml.safe_load(Path(schema_path("local")).read_text())
    for index, task in enumerate(data["tasks"]):
        task["pos_downsampling_rate"], task["neg_downsampling_rate"] = 1.0, 0.1 + 0.05 * index
    (tmp_path / "schema.yaml").write_text(yaml.safe_dump(data))
    schema = load_schema(str(tmp_path / "schema.yaml"))
    write_raw(schema, str(tmp_path / "raw"), rows=80, files=1)
    run(str(tmp_path / "raw"), schema, str(tmp_path / "out"), ConvertSettings(shards=1, workers=1))
    (batch,) = read_batches(str(tmp_path / "out/train"), schema, ReaderOptions(batch_size=1000))
    neg = np.array([t.neg_downsampling_rate for t in schema.tasks], dtype=np.float32)
    y = batch.labels.numpy()
    assert set(np.unique(y)) == {0.0, 1.0}
    np.testing.assert_allclose(batch.weights.numpy(), y / 1.0 + (1 - y) / neg, rtol=1e-6)
    with pytest.raises(SchemaError, match="written for schema"):
        read_batches(str(tmp_path / "out/train"), SCHEMA, ReaderOptions(batch_size=10))


def test_ranks_read_disjoint_shards_that_cover_the_split(dataset):
    out, _ = dataset
    options = ReaderOptions(batch_size=50, seed=3)
    everything = sorted(tweet_ids(read_batches(str(out / "train"), SCHEMA, options)))
    per_rank = [tweet_ids(read_batches(str(out / "train"), SCHEMA, options, rank=r, world_size=2)) for r in range(2)]
    assert not set(per_rank[0]) & set(per_rank[1])
    assert sorted(per_rank[0] + per_rank[1]) == everything
    with pytest.raises(DataError, match="5 shards, fewer than world_size=6"):
        read_batches(str(out / "train"), SCHEMA, options, rank=0, world_size=6)


@pytest.mark.parametrize("cycle,batch_size", [(2, 37), (4, 64)])
def test_start_batch_resumes_exactly_where_a_full_read_was(dataset, cycle, batch_size):
    out, _ = dataset
    options = ReaderOptions(batch_size=batch_size, repeat=True, seed=11, num_parallel_reads=cycle)
    full = [tweet_ids([b]) for b in itertools.islice(read_batches(str(out / "train"), SCHEMA, options), 30)]
    for start in (1, 6, 13, 29):
        resumed = itertools.islice(read_batches(str(out / "train"), SCHEMA, options, start_batch=start), 30 - start)
        assert [tweet_ids([b]) for b in resumed] == full[start:], f"start_batch={start}"


def test_each_epoch_reshuffles_shards_deterministically(dataset):
    out, _ = dataset
    per_epoch = count_records(str(out / "train"))

    def epochs(seed):
        ids = tweet_ids(itertools.islice(
            read_batches(str(out / "train"), SCHEMA, ReaderOptions(batch_size=per_epoch, repeat=True, seed=seed)), 3))
        return [ids[i * per_epoch : (i + 1) * per_epoch] for i in range(3)]

    first = epochs(seed=5)
    assert sorted(first[0]) == sorted(first[1]) == sorted(first[2])
    assert len({tuple(e) for e in first}) > 1
    assert epochs(seed=5) == first
    assert epochs(seed=6) != first
    unshuffled = tweet_ids(read_batches(str(out / "train"), SCHEMA, ReaderOptions(batch_size=1000, shuffle=False)))
    assert unshuffled != first[0] and sorted(unshuffled) == sorted(first[0])


def test_no_repeat_ends_and_resume_past_the_end_is_empty(dataset):
    out, _ = dataset
    total = count_records(str(out / "eval"))
    batches = list(read_batches(str(out / "eval"), SCHEMA, ReaderOptions(batch_size=32)))
    assert [b.batch_size for b in batches] == [32] * (total // 32) + ([total % 32] if total % 32 else [])
    dropped = list(read_batches(str(out / "eval"), SCHEMA, ReaderOptions(batch_size=32, drop_remainder=True)))
    assert len(dropped) == total // 32
    assert list(read_batches(str(out / "eval"), SCHEMA, ReaderOptions(batch_size=32), start_batch=len(batches))) == []


def _round_robin(counts, offsets, order):
    """(shard, record) pairs in the order an interleave over `order` emits them."""
    position, out = dict(zip(order, (offsets[i] for i in order), strict=True)), []
    while any(position[i] < counts[i] for i in order):
        for i in order:
            if position[i] < counts[i]:
                out.append((i, position[i]))
                position[i] += 1
    return out


@settings(deadline=None)
@given(st.lists(st.integers(0, 12), min_size=1, max_size=6), st.data())
def test_round_robin_resume_continues_the_full_sequence(counts, data):
    consumed = data.draw(st.integers(0, sum(counts)))
    offsets, first = round_robin_offsets(counts, consumed)
    full = _round_robin(counts, [0] * len(counts), list(range(len(counts))))
    order = list(range(first, len(counts))) + list(range(first))
    assert _round_robin(counts, offsets, order) == full[consumed:]


@pytest.fixture
def damaged(dataset, tmp_path):
    """A private copy of the converted train split, to break."""
    out, _ = dataset
    shutil.copytree(out / "train", tmp_path / "train")
    manifest, directory = read_manifest(str(tmp_path / "train"))
    return tmp_path / "train", manifest


@pytest.mark.parametrize("damage", ["flip", "truncate", "delete"])
def test_bad_shard_fails_naming_it(damaged, damage):
    split, manifest = damaged
    victim = split / manifest.files[2].path
    data = bytearray(victim.read_bytes())
    if damage == "flip":
        data[len(data) // 2] ^= 0x55
        victim.write_bytes(bytes(data))
    elif damage == "truncate":
        victim.write_bytes(bytes(data[: len(data) // 2]))
    else:
        victim.unlink()
    with pytest.raises(DataError, match=str(victim)):
        list(read_batches(str(split), SCHEMA, ReaderOptions(batch_size=16, shuffle=False)))


def test_skip_corrupt_skips_the_shard_with_a_counted_warning(damaged, caplog):
    split, manifest = damaged
    victim = split / manifest.files[1].path
    victim.write_bytes(victim.read_bytes()[:100])
    with caplog.at_level(logging.INFO):
        batches = list(read_batches(str(split), SCHEMA, ReaderOptions(batch_size=16, skip_corrupt=True)))
    assert sum(b.batch_size for b in batches) == manifest.total_records - manifest.files[1].records
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "skipped a bad shard (1 so far)" in warnings[0] and str(victim) in warnings[0]
    assert any("skipped_shards=1" in r.getMessage() and "rows_per_s=" in r.getMessage() for r in caplog.records)


def test_garbage_that_matches_its_manifest_fails_naming_the_shards_being_read(tmp_path):
    (tmp_path / "bad.tfrecord.gz").write_bytes(b"\x1f\x8b" + b"not a gzip stream" * 10)
    data = (tmp_path / "bad.tfrecord.gz").read_bytes()
    entry = ManifestFile("bad.tfrecord.gz", 3, len(data), hashlib.sha256(data).hexdigest())
    write_manifest(str(tmp_path), "tfrecord", SCHEMA.hash, [entry])
    with pytest.raises(DataError, match=r"bad\.tfrecord\.gz: cannot read TFRecord shard"):
        list(read_batches(str(tmp_path), SCHEMA, ReaderOptions(batch_size=4)))


def test_records_written_the_original_way_are_read_correctly(tmp_path):
    """One tf.train.Example per row through tf.io.TFRecordWriter(..., "GZIP"), like the original."""
    table = make_table(SCHEMA, 70, seed=4)
    columns = table_columns(SCHEMA, table)
    entries = []
    for index, rows in enumerate((range(0, 40), range(40, 70))):
        path = tmp_path / f"original-{index}.tfrecord.gz"
        with tf.io.TFRecordWriter(str(path), "GZIP") as writer:
            for row in rows:
                example = tf.train.Example()
                for spec in SCHEMA.features:
                    values = columns[spec.name][row]
                    feature = example.features.feature[spec.feature]
                    if spec.dtype == "float32":
                        feature.float_list.value.extend(values.tolist())
                    else:
                        feature.int64_list.value.extend(int(v) for v in values)
                writer.write(example.SerializeToString())
        data = path.read_bytes()
        entries.append(ManifestFile(path.name, len(rows), len(data), hashlib.sha256(data).hexdigest()))
    write_manifest(str(tmp_path), "tfrecord", SCHEMA.hash, entries)
    batches = list(read_batches(str(tmp_path / "_MANIFEST.json"), SCHEMA, ReaderOptions(batch_size=16)))
    assert fingerprints(SCHEMA, batch_columns(SCHEMA, batches)) == fingerprints(SCHEMA, columns)


@pytest.mark.integration
def test_gcs_shards_go_through_a_bounded_cache_that_is_emptied(gcs_bucket, dataset, tmp_path):
    out, _ = dataset
    storage.copy_prefix(str(out / "train"), f"{gcs_bucket}/train")
    cache = tmp_path / "cache"
    options = ReaderOptions(batch_size=10, num_parallel_reads=2, cache_dir=str(cache))
    seen_max, rows = 0, 0
    for batch in read_batches(f"{gcs_bucket}/train", SCHEMA, options):
        seen_max = max(seen_max, len(list(cache.iterdir())))
        rows += batch.batch_size
    assert rows == count_records(str(out / "train"))
    assert 1 <= seen_max <= 4  # the group being read and the next one, 2 shards each
    assert list(cache.iterdir()) == []


def test_throughput_is_logged_machine_readably(dataset, caplog, monkeypatch):
    out, _ = dataset
    monkeypatch.setenv("RECAP_READER_LOG_EVERY_S", "0")
    with caplog.at_level(logging.INFO, logger="components.records.reader"):
        batches = list(read_batches(str(out / "eval"), SCHEMA, ReaderOptions(batch_size=40), start_batch=1))
    lines = [r.getMessage() for r in caplog.records]
    periodic = [line for line in lines if line.startswith("reader rank=0 batch=")]
    assert len(periodic) == len(batches) and periodic[0].startswith("reader rank=0 batch=2 rows=40 rows_per_s=")
    assert lines[-1].startswith(f"reader done rank=0 batches={len(batches)} ")


def test_a_shard_damaged_with_its_manifest_entry_is_named_alone(damaged):
    """The manifest was rewritten to match the damaged bytes: only decoding finds it, and the
    error names that one shard, not every shard TF was reading in parallel."""
    split, manifest = damaged
    victim = split / manifest.files[2].path
    data = bytearray(victim.read_bytes())
    data[len(data) // 2 :] = b"\x00" * (len(data) - len(data) // 2)
    victim.write_bytes(bytes(data))
    entries = [ManifestFile(f.path, f.records, len(data), hashlib.sha256(data).hexdigest()) if i == 2 else f
               for i, f in enumerate(manifest.files)]
    write_manifest(str(split), "tfrecord", SCHEMA.hash, entries)
    with pytest.raises(DataError) as caught:
        list(read_batches(str(split), SCHEMA, ReaderOptions(batch_size=16, shuffle=False, num_parallel_reads=4)))
    message = str(caught.value)
    assert message.startswith(f"{victim}: cannot read TFRecord shard")
    assert [f.path for f in manifest.files if f.path in message] == [manifest.files[2].path]


def _converted_unchecked(tmp_path, change) -> Path:
    """Raw rows broken by `change`, converted with the value checks off (`recap convert --skip-checks`)."""
    from tests.convert.rawdata import write_raw as write

    raw = tmp_path / "raw"
    write(SCHEMA, str(raw), rows=120, files=1)
    import pyarrow.parquet as pq

    path = next(raw.glob("*.parquet"))
    table = change(pq.read_table(path))
    pq.write_table(table, path)
    (raw / "_MANIFEST.json").unlink()
    run(str(raw), SCHEMA, str(tmp_path / "out"), ConvertSettings(shards=3, workers=1, eval_fraction=0.0,
                                                                 check_values=False))
    return tmp_path / "out" / "train"


def test_labels_outside_0_1_fail_the_read_naming_shard_record_and_column(tmp_path):
    import pyarrow as pa

    label = SCHEMA.task_label(SCHEMA.tasks[0])

    def labels_0_to_9(table):
        return table.set_column(table.schema.get_field_index(label.column), label.column,
                                pa.array(np.arange(len(table)) % 10, type=label.arrow_type))

    split = _converted_unchecked(tmp_path, labels_0_to_9)
    with pytest.raises(DataError, match=rf"part-\d+\S*: record \d+: column '{label.column}' \(feature "
                                        rf"{label.feature}\) has value \d\.0 \(labels are 0 or 1\) \[label_not_binary\]"):
        list(read_batches(str(split), SCHEMA, ReaderOptions(batch_size=16)))


def inf_in_embedding(row: int, element: int = 3):
    """A table edit: the first embedding's `element` of `row` set to inf (raw data convert would refuse)."""
    import pyarrow as pa

    spec = SCHEMA.embeddings[0]

    def edit(table):
        values = table.column(spec.column).combine_chunks().flatten().to_numpy(zero_copy_only=False).copy()
        values[row * spec.length + element] = np.inf
        array = pa.FixedSizeListArray.from_arrays(pa.array(values, type=spec.arrow_value_type), spec.length)
        return table.set_column(table.schema.get_field_index(spec.column), spec.column, array)

    return edit


def test_a_non_finite_embedding_fails_the_read_naming_shard_record_and_column(tmp_path):
    spec = SCHEMA.embeddings[0]
    split = _converted_unchecked(tmp_path, inf_in_embedding(7))
    with pytest.raises(DataError, match=rf"part-00000\S*: record 7: column '{spec.column}' .*inf at element 3 "
                                        rf".*\[non_finite\]"):
        list(read_batches(str(split), SCHEMA, ReaderOptions(batch_size=16, shuffle=False)))
