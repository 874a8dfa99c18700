"""Our bulk wire format is what TensorFlow reads and writes: same Examples, same framing."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from components.common.schema import load_schema
from components.convert.example_wire import ExampleEncoder, frame_records, varint, varint_rows

tf = pytest.importorskip("tensorflow")

INT64 = st.integers(min_value=-(1 << 63), max_value=(1 << 63) - 1)


def naive_example(schema, columns, row):
    """The original's way: one tf.train.Example object per row."""
    example = tf.train.Example()
    for spec in schema.features:
        values = columns[spec.name][row].reshape(-1)
        if spec.dtype == "float32":
            example.features.feature[spec.feature].float_list.value.extend(values.astype(np.float32).tolist())
        else:
            example.features.feature[spec.feature].int64_list.value.extend(int(v) for v in values)
    return example


def assert_same_example(ours: bytes, reference, schema) -> None:
    parsed = tf.train.Example.FromString(ours)
    assert set(parsed.features.feature) == set(reference.features.feature)
    for spec in schema.features:
        got, want = parsed.features.feature[spec.feature], reference.features.feature[spec.feature]
        if spec.dtype == "float32":  # compare bits: NaN payloads must survive too
            a = np.asarray(got.float_list.value, dtype=np.float32).view(np.uint32)
            b = np.asarray(want.float_list.value, dtype=np.float32).view(np.uint32)
            np.testing.assert_array_equal(a, b)
        else:
            assert list(got.int64_list.value) == list(want.int64_list.value), spec.name


@settings(deadline=None)
@given(st.lists(INT64, min_size=1, max_size=40))
def test_varint_rows_match_protobuf_varints(values):
    array = np.asarray(values, dtype=np.int64).reshape(1, -1)
    flat, offsets = varint_rows(array)
    assert flat.tobytes() == b"".join(varint(v) for v in values)
    assert offsets.tolist() == [0, len(flat)]


@settings(max_examples=25, deadline=None)
@given(st.data())
def test_serialized_rows_equal_the_naive_examples(data):
    schema = load_schema("local")
    rows = data.draw(st.integers(1, 4), label="rows")
    columns = {}
    for spec in schema.features:
        shape = (rows, spec.length)
        if spec.dtype == "float32":
            columns[spec.name] = data.draw(hnp.arrays(np.float32, shape, elements=st.floats(width=32)))
        else:
            columns[spec.name] = data.draw(hnp.arrays(np.int64, shape, elements=INT64))
    records = ExampleEncoder(schema).serialize(columns, rows)
    assert len(records) == rows
    for row, record in enumerate(records):
        reference = naive_example(schema, columns, row)
        assert_same_example(record, reference, schema)
        assert len(record) == reference.ByteSize()


def test_framing_equals_tf_record_writer(tmp_path):
    payloads = [b"", b"a", bytes(range(256)) * 40]
    path = str(tmp_path / "tf.tfrecord")
    with tf.io.TFRecordWriter(path) as writer:
        for payload in payloads:
            writer.write(payload)
    assert (tmp_path / "tf.tfrecord").read_bytes() == frame_records(payloads)
