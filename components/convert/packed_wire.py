"""Records of the packed layout (components.records.layout): a `tf.train.Example` of bytes features.

Every feature of a packed row has a fixed byte length, so every protobuf header is the same
for all rows (`PackedRecord`): a block of rows is one [rows, record_bytes] uint8 matrix,
header columns broadcast from the template, payload columns copied from the little-endian arrays. The bytes equal
`tf.train.Example.SerializeToString(deterministic=True)` (map entries in key order).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from components.common.errors import DataError
from components.common.schema import Role, Schema
from components.convert.example_wire import frame_records
from components.records.layout import PackedField, PackedRecord, RecordLayout


class PackedEncoder:
    """Serializes blocks of rows (numpy arrays per schema feature name) into packed TFRecord bytes."""

    def __init__(self, schema: Schema, layout: RecordLayout) -> None:
        self.schema, self.layout = schema, layout
        self.fields = sorted(layout.fields(schema), key=lambda f: f.feature)
        self._continuous = schema.group(Role.CONTINUOUS).name
        self._binary = schema.group(Role.BINARY).name
        self._ids = [s.name for s in schema.ids]
        self._labels = [t.label for t in schema.tasks]
        self.names = {self._continuous, self._binary, *self._ids, *self._labels, *(s.name for s in schema.embeddings)}
        self.record = PackedRecord.of(layout, schema)
        self.record_bytes = self.record.size
        self._template = np.frombuffer(self.record.template, dtype=np.uint8)

    def check_rows(self, columns: Mapping[str, np.ndarray], uri: str, first_row: int) -> None:
        """Binary values and task labels must fit a byte: a DataError names the first row that does not."""
        for name, kept in [(self._binary, self.layout.binary)] + [(label, 1) for label in self._labels]:
            values = columns[name][:, : int(kept or 0)]
            bad = (values < 0) | (values > 255)
            if bad.any():
                row, col = (int(i) for i in np.argwhere(bad)[0])
                raise DataError(f"{uri}: row {first_row + row}: {name}[{col}] = {values[row, col]} does not fit "
                                f"the packed layout's uint8 (binary values and labels are 0/1)")

    def _values(self, field: PackedField, columns: Mapping[str, np.ndarray], rows: int) -> np.ndarray:
        if field.part == "continuous":
            values = columns[self._continuous].reshape(rows, -1)[:, : field.length]
        elif field.part == "binary":
            values = columns[self._binary].reshape(rows, -1)[:, : field.length]
        elif field.part == "ids":
            values = np.concatenate([columns[n].reshape(rows, 1) for n in self._ids], axis=1)
        elif field.part == "labels":
            values = np.concatenate([columns[n].reshape(rows, 1) for n in self._labels], axis=1)
        else:
            values = columns[field.part.split("/", 1)[1]].reshape(rows, -1)
        return np.ascontiguousarray(values, dtype=field.dtype).view(np.uint8).reshape(rows, -1)

    def serialize(self, columns: Mapping[str, np.ndarray], rows: int) -> np.ndarray:
        """[rows, record_bytes] uint8: each row one serialized `tf.train.Example`."""
        out = np.broadcast_to(self._template, (rows, self.record_bytes)).copy()
        for field, at, size in self.record.slots:
            out[:, at : at + size] = self._values(field, columns, rows)
        return out

    def records(self, columns: Mapping[str, np.ndarray], rows: int) -> bytes:
        """The TFRecord-framed bytes of a block of rows."""
        matrix = self.serialize(columns, rows)
        return frame_records([row.tobytes() for row in matrix])
