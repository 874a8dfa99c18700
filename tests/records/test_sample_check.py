"""The launcher's sample check: a split's first records read without TensorFlow or torch, the
trainer reader's per-batch rules applied, the shard, record and column named."""

from __future__ import annotations

import gzip
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from components.common.errors import DataError, SchemaError
from components.common.manifest import read_manifest
from components.common.schema import load_schema
from components.convert import ConvertSettings, run
from components.records.layout import ModelReads
from components.records.sample import check_split_sample, example_class, tfrecords
from tests.convert.rawdata import write_raw

SCHEMA = load_schema("local")
LABEL = SCHEMA.task_label(SCHEMA.tasks[3])
EMBEDDING = SCHEMA.embeddings[0]


def convert(raw: Path, out: Path, **settings) -> Path:
    run(str(raw), SCHEMA, str(out), ConvertSettings(shards=2, workers=1, check_values=False, **settings))
    return out / "train"


def break_column(raw: Path, column: str, row: int, value) -> None:
    """Set one value of `column` in every raw file (a list column: its first element)."""
    for part in sorted(raw.glob("*.parquet")):
        table = pq.read_table(part)
        index = table.schema.get_field_index(column)
        values = table.column(index).to_pylist()
        if isinstance(values[row], list):
            values[row] = [value, *values[row][1:]]
        else:
            values[row] = value
        table = table.set_column(index, table.schema.field(index), pa.array(values, table.schema.field(index).type))
        pq.write_table(table, part)


@pytest.fixture
def raw(tmp_path):
    out = tmp_path / "raw"
    write_raw(SCHEMA, str(out), rows=120, files=1, row_group_size=60)
    (out / "_MANIFEST.json").unlink(missing_ok=True)
    return out


@pytest.mark.parametrize("layout", ["segdense", "packed"])
def test_a_clean_split_passes_and_the_count_is_what_was_read(raw, tmp_path, layout):
    split = convert(raw, tmp_path / "out", layout=layout)
    result = check_split_sample(str(split), SCHEMA, records=64)
    assert result.shards == 2 and result.records == 64


@pytest.mark.parametrize("layout", ["segdense", "packed"])
def test_a_label_outside_0_1_is_named_with_shard_record_and_column(raw, tmp_path, layout):
    break_column(raw, LABEL.column, 0, 7)
    split = convert(raw, tmp_path / "out", layout=layout)
    with pytest.raises(DataError) as err:
        check_split_sample(str(split), SCHEMA)
    message = str(err.value)
    assert f"column {LABEL.column!r}" in message and "has value 7" in message and "[label_not_binary]" in message
    shard, record = message.split(": record ")[0], int(message.split(": record ")[1].split(":")[0])
    # the named record really is the broken row: read it back through TensorFlow's own parser
    tf = pytest.importorskip("tensorflow")
    compression = "GZIP" if shard.endswith(".gz") else ""
    serialized = list(tf.data.TFRecordDataset(shard, compression_type=compression).skip(record).take(1))[0]
    example = tf.train.Example.FromString(serialized.numpy())
    if layout == "segdense":
        assert example.features.feature[LABEL.feature].int64_list.value[0] == 7 or \
            example.features.feature[LABEL.feature].float_list.value[0] == 7
    else:
        labels = np.frombuffer(example.features.feature["recap.packed.labels"].bytes_list.value[0], "u1")
        assert 7 in labels


def test_a_non_finite_embedding_is_named(raw, tmp_path):
    break_column(raw, EMBEDDING.column, 1, float("nan"))
    split = convert(raw, tmp_path / "out")
    with pytest.raises(DataError, match=rf"record \d+: column {EMBEDDING.column!r} .*\[non_finite\]"):
        check_split_sample(str(split), SCHEMA)


def test_a_damaged_record_is_named_by_its_checksum(raw, tmp_path):
    split = convert(raw, tmp_path / "out", layout="packed")  # uncompressed: flip one payload byte
    shard = sorted(split.glob("part-*"))[0]
    data = bytearray(shard.read_bytes())
    data[200] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(DataError, match=rf"{shard.name}: record 0: corrupted record \(checksum mismatch\)"):
        check_split_sample(str(split), SCHEMA)


def test_a_truncated_gzip_shard_is_named(raw, tmp_path):
    split = convert(raw, tmp_path / "out")
    shard = sorted(split.glob("part-*"))[0]
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 3])
    with pytest.raises(DataError, match=rf"{shard.name}: (record \d+: truncated|cannot read TFRecord shard)"):
        check_split_sample(str(split), SCHEMA)


def test_a_packed_split_that_lacks_what_the_model_reads_is_refused(raw, tmp_path):
    config = tmp_path / "trainer.yaml"
    config.write_text("model:\n  featurization:\n    continuous_truncation: 8\n")
    split = convert(raw, tmp_path / "out", layout="packed", trainer_config=str(config))
    with pytest.raises(SchemaError, match="model reads 64 continuous values"):
        check_split_sample(str(split), SCHEMA, ModelReads())


def test_records_and_framing_agree_with_tensorflow(raw, tmp_path):
    """Every record our framing reader yields is the one TensorFlow's reader yields, parsed alike."""
    tf = pytest.importorskip("tensorflow")
    split = convert(raw, tmp_path / "out")
    shard = sorted(split.glob("part-*"))[0]
    with gzip.open(shard) as stream:
        ours = list(tfrecords(stream, str(shard), limit=10_000))
    theirs = [r.numpy() for r in tf.data.TFRecordDataset(str(shard), compression_type="GZIP")]
    assert ours == theirs and len(ours) == read_manifest(str(split))[0].files[0].records
    parsed = example_class().FromString(ours[0])
    assert parsed.SerializeToString(deterministic=True) == \
        tf.train.Example.FromString(ours[0]).SerializeToString(deterministic=True)


def test_the_check_imports_neither_tensorflow_nor_torch(raw, tmp_path):
    """The launcher's image has neither: the check must run without them."""
    split = convert(raw, tmp_path / "out")
    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('tensorflow', 'torch', 'torchrec'):\n"
        "            raise ImportError(f'blocked: {name}')\n"
        "sys.meta_path.insert(0, Block())\n"
        "from components.common.schema import load_schema\n"
        "from components.records.sample import check_split_sample\n"
        f"print(check_split_sample({str(split)!r}, load_schema('local')).records)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert int(done.stdout) > 0
