"""The packed layout: the model's features only, byte-exact, told apart from segdense by its hash."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import yaml

from components.common import storage
from components.common.errors import ConfigError, DataError, SchemaError
from components.common.manifest import read_manifest
from components.common.schema import load_schema
from components.convert import ConvertSettings, run
from components.convert.packed_wire import PackedEncoder
from components.records.layout import PACKED, SEGDENSE, ModelReads, RecordLayout
from components.records.reader import ReaderOptions, read_batches
from tests.convert.rawdata import table_columns, write_raw

tf = pytest.importorskip("tensorflow")

SCHEMA = load_schema("local")
READS = ModelReads(continuous=40, binary=5)  # what a truncated model reads of local's 64 and 16


def trainer_config(path: Path, continuous: int | None, binary: int | None) -> str:
    """A trainer YAML whose only relevant part is the model's truncation."""
    featurization = {k: v for k, v in (("continuous_truncation", continuous), ("binary_truncation", binary)) if v}
    path.write_text(yaml.safe_dump({"model": {"featurization": featurization}}))
    return str(path)


@pytest.fixture(scope="module")
def both(tmp_path_factory):
    """The same 400 rows converted to segdense and to packed (for READS), 3 shards each."""
    root = tmp_path_factory.mktemp("packed")
    table = write_raw(SCHEMA, str(root / "raw"), rows=400, files=2, row_group_size=50)
    config = trainer_config(root / "trainer.yaml", READS.continuous, READS.binary)
    run(str(root / "raw"), SCHEMA, str(root / "segdense"), ConvertSettings(shards=3, workers=1))
    run(str(root / "raw"), SCHEMA, str(root / "packed"),
        ConvertSettings(shards=3, workers=1, layout="packed", trainer_config=config))
    return root, table


def model_view(batch):
    """Everything of a batch the model reads."""
    out = {"continuous": batch.continuous.numpy(), "binary": batch.binary.numpy(),
           "labels": batch.labels.numpy(), "weights": batch.weights.numpy(),
           "ids": batch.sparse_features.values().numpy(), "lengths": batch.sparse_features.lengths().numpy()}
    out.update({f"embedding/{k}": v.numpy() for k, v in batch.embeddings.items()})
    return out


def assert_same_batches(left, right):
    assert len(left) == len(right) > 0
    for a, b in zip(left, right, strict=True):
        a, b = model_view(a), model_view(b)
        assert a.keys() == b.keys()
        for key in a:
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)  # NaN == NaN here, bit for bit otherwise


def test_packed_records_are_what_tensorflow_serializes():
    columns = table_columns(SCHEMA, _table(5))
    layout = READS.layout(SCHEMA)
    encoder = PackedEncoder(SCHEMA, layout)
    rows = encoder.serialize(columns, 5)
    for row in range(5):
        example = tf.train.Example()
        for field in layout.fields(SCHEMA):
            data = encoder._values(field, {k: v[row : row + 1] for k, v in columns.items()}, 1).tobytes()
            example.features.feature[field.feature].bytes_list.value.append(data)
        assert rows[row].tobytes() == example.SerializeToString(deterministic=True)


def _table(rows):
    from tests.convert.rawdata import make_table

    return make_table(SCHEMA, rows, seed=3)


def test_packed_batches_equal_segdense_batches_for_the_models_features(both):
    root, _ = both
    for split in ("train", "eval"):
        options = ReaderOptions(batch_size=32, seed=4, num_parallel_reads=2, reads=READS)
        segdense = list(read_batches(str(root / "segdense" / split), SCHEMA, options))
        packed = list(read_batches(str(root / "packed" / split), SCHEMA, options))
        assert_same_batches(segdense, packed)
        assert packed[0].continuous.shape[1] == 40 and packed[0].binary.shape[1] == 5
        assert packed[0].discrete.shape == (packed[0].batch_size, 0)
    full = list(read_batches(str(root / "segdense" / "train"), SCHEMA, ReaderOptions(batch_size=32, seed=4)))
    np.testing.assert_array_equal(full[0].continuous.numpy()[:, :40], packed_first(root)[0])


def packed_first(root):
    batch = next(iter(read_batches(str(root / "packed" / "train"), SCHEMA, ReaderOptions(batch_size=32, seed=4))))
    return batch.continuous.numpy(), batch


def test_packed_split_declares_its_layout_and_is_uncompressed(both):
    root, _ = both
    manifest, _ = read_manifest(str(root / "packed" / "train"))
    segdense, _ = read_manifest(str(root / "segdense" / "train"))
    assert manifest.extra["layout"] == PACKED and segdense.extra.get("layout") == SEGDENSE
    assert manifest.extra["compression"] == "NONE" and segdense.extra["compression"] == "GZIP"
    assert manifest.schema_hash == READS.layout(SCHEMA).hash(SCHEMA) != segdense.schema_hash == SCHEMA.hash
    assert all(f.path.endswith(".tfrecord") for f in manifest.files)
    record = PackedEncoder(SCHEMA, READS.layout(SCHEMA)).record_bytes
    kept = 4 * 40 + 5 + 4 * 48 + 8 * 3 + len(SCHEMA.tasks)  # continuous, binary, embeddings, IDs, task labels
    assert kept < record < kept + 400  # the values kept, plus protobuf headers and feature names
    assert sum(f.bytes for f in manifest.files) == manifest.total_records * (record + 16)  # + TFRecord framing


def test_a_mismatched_layout_or_schema_is_refused_naming_the_shard(both, tmp_path):
    root, _ = both
    with pytest.raises(SchemaError) as exc:
        read_batches(str(root / "packed" / "train"), SCHEMA, ReaderOptions(batch_size=8, reads=ModelReads(64, 5)))
    message = str(exc.value)
    assert "\n" not in message and "part-00000-of-00003.tfrecord" in message and "64 continuous" in message
    data = yaml.safe_load(Path(SCHEMA.source).read_text())
    data["tasks"] = data["tasks"][:-1]
    (tmp_path / "other.yaml").write_text(yaml.safe_dump(data))
    other = load_schema(str(tmp_path / "other.yaml"))
    for layout in ("packed", "segdense"):
        with pytest.raises(SchemaError, match=r"part-00000-of-00003\.tfrecord.*written for schema local in layout"):
            read_batches(str(root / layout / "train"), other, ReaderOptions(batch_size=8))


@pytest.mark.parametrize("cycle,batch_size", [(1, 29), (3, 50)])
def test_packed_reads_resume_exactly(both, cycle, batch_size):
    root, _ = both
    options = ReaderOptions(batch_size=batch_size, repeat=True, seed=2, num_parallel_reads=cycle, reads=READS)
    split = str(root / "packed" / "train")
    full = list(itertools.islice(read_batches(split, SCHEMA, options), 20))
    for start in (1, 7, 19):
        assert_same_batches(list(itertools.islice(read_batches(split, SCHEMA, options, start_batch=start), 20 - start)),
                            full[start:])


def test_packed_shards_are_verified_like_segdense(both, tmp_path):
    root, _ = both
    import shutil

    shutil.copytree(root / "packed" / "eval", tmp_path / "eval")
    shard = next((tmp_path / "eval").glob("part-00001-*"))
    data = bytearray(shard.read_bytes())
    data[100] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(DataError, match="part-00001-of-00003.tfrecord"):
        list(read_batches(str(tmp_path / "eval"), SCHEMA, ReaderOptions(batch_size=16)))


def test_packed_read_from_gcs_equals_local(both, gcs_bucket):
    root, _ = both
    for path in sorted((root / "packed" / "eval").iterdir()):
        storage.write_bytes(f"{gcs_bucket}/eval/{path.name}", path.read_bytes())
    options = ReaderOptions(batch_size=25, seed=1, reads=READS)
    assert_same_batches(list(read_batches(f"{gcs_bucket}/eval", SCHEMA, options)),
                        list(read_batches(str(root / "packed" / "eval"), SCHEMA, options)))


def test_values_that_do_not_fit_a_byte_are_refused_naming_the_row(tmp_path):
    table = _table(30)
    columns = table_columns(SCHEMA, table)
    columns["binary"] = columns["binary"].astype(np.int64)
    columns["binary"][17, 2] = 300
    encoder = PackedEncoder(SCHEMA, READS.layout(SCHEMA))
    with pytest.raises(DataError, match=r"part\.parquet: row 117: binary\[2\] = 300"):
        encoder.check_rows(columns, "part.parquet", 100)
    columns["binary"][17, 2] = 1
    columns["binary"][3, 9] = 300  # beyond the kept values: not written, not checked
    encoder.check_rows(columns, "part.parquet", 100)


def test_settings_pick_the_layout_from_the_trainer_config(tmp_path):
    prod = load_schema("prod")
    settings = ConvertSettings(layout="packed", trainer_config="configs/prod.yaml", workers=1)
    assert settings.record_layout(prod) == RecordLayout(PACKED, 2117, 59)
    assert settings.container() == "none"
    assert ConvertSettings(layout="packed", workers=1).record_layout(prod) == RecordLayout(PACKED, 6000, 512)
    assert ConvertSettings(workers=1).container() == "gzip"
    with pytest.raises(ConfigError, match="trainer_config: only used with layout packed"):
        ConvertSettings(trainer_config="configs/prod.yaml", workers=1).record_layout(prod)
    too_many = trainer_config(tmp_path / "t.yaml", 100, None)
    with pytest.raises(ConfigError, match="100 continuous values kept, schema local has 64"):
        ConvertSettings(layout="packed", trainer_config=too_many, workers=1).record_layout(SCHEMA)


def test_fixed_offset_decoding_equals_parse_example(both):
    import components.records.reader as reader

    root, _ = both
    layout = reader.RecordLayout.from_extra(read_manifest(str(root / "packed" / "train"))[0].extra)
    serialized = next(iter(tf.data.TFRecordDataset(sorted(str(p) for p in (root / "packed" / "train").iterdir()
                                                          if p.name.startswith("part-"))).batch(64)))
    fast = reader._Layout(SCHEMA, layout, READS).parse_fn()(serialized)
    generic = reader._Layout(SCHEMA, layout, READS, fixed_offsets=False).parse_fn()(serialized)
    assert fast.keys() == generic.keys()
    for key in fast:
        np.testing.assert_array_equal(fast[key].numpy(), generic[key].numpy(), err_msg=key)
