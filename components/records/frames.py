"""Uncompressed packed shards read as fixed-size frames with numpy: no TensorFlow, no parsing.

A packed record has a fixed size and its payloads sit at fixed byte offsets
(`layout.PackedRecord`); an uncompressed TFRecord frame around it adds a fixed 16 bytes
(length, its CRC, the record, its CRC). A shard is therefore a [records, frame] byte array:
a read is `readinto` a buffer, and each feature of a batch is one gather of its byte columns
reinterpreted as little-endian values. That does in numpy what the TF path does with
`decode_raw` + `bitcast`, minus tf.data's per-record hand-offs, and moves ~10 KB per row
about three times (file -> buffer -> feature arrays -> torch, the last without a copy).

The record order is exactly the TF path's (components.records.shards): groups in turn, each
read round-robin one record per shard, a shard that runs out dropping out of the turn, the
records cut into batches across group boundaries. So resume arithmetic, shuffling and the
batches themselves are the same whichever path reads a split (tests/records/test_frames.py).

Integrity: a local shard's size and sha256 are checked against the manifest by the provider
before it is read, a gs:// shard's block by block as it arrives (components.records.remote);
either is stronger than TFRecord's per-record CRC-32C, so the CRCs are not recomputed. Every
frame's length field and every header byte of every record are compared
with the layout's template, so a shard of another layout or a damaged frame structure is
named (shard, record) instead of being decoded as garbage.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from components.common.errors import DataError
from components.records.layout import PackedRecord

FRAME_OVERHEAD = 16  # uint64 length + uint32 CRC before the record, uint32 CRC after it
CHUNK_ROWS = 2048  # records read from a group's shards at a time (~20 MB of prod rows)


@dataclass(frozen=True)
class FrameBatch:
    """One batch of rows as numpy arrays, with where each row came from."""

    parts: dict[str, np.ndarray]  # field part ("continuous", "labels", "embedding/x", ...) -> [rows, n]
    shards: tuple[str, ...]  # URIs the rows came from
    shard_of_row: np.ndarray  # index into `shards` per row
    record_of_row: np.ndarray  # record number within its shard per row

    def where(self, row: int) -> tuple[str, int]:
        return self.shards[int(self.shard_of_row[row])], int(self.record_of_row[row])


class FrameLayout:
    """Byte positions of a packed record's frame: each kept field's slice and the header bytes."""

    def __init__(self, record: PackedRecord, keep: dict[str, int] | None = None) -> None:
        """`keep`: values kept per part (a model reading fewer continuous/binary values than stored)."""
        self.record = record
        self.frame = record.size + FRAME_OVERHEAD
        self.slices: dict[str, tuple[int, int, str, int]] = {}  # part -> (start, stop, dtype, values)
        payload = np.zeros(record.size, dtype=bool)
        for field, at, size in record.slots:
            payload[at : at + size] = True
            width = size // field.length if field.length else 1
            values = min(field.length, (keep or {}).get(field.part, field.length))
            start = 12 + at
            self.slices[field.part] = (start, start + values * width, field.dtype, values)
        self.header_at = 12 + np.flatnonzero(~payload)  # every byte of the record that is not a payload
        self.header = np.frombuffer(record.template, dtype=np.uint8)[~payload]


Opener = Callable[[str, str, int], "tuple[Any, int]"]  # (path, URI, start byte) -> (stream, shard bytes)


def open_local(path: str, uri: str, start: int) -> tuple[Any, int]:
    """A local shard (already verified by the provider) as an unbuffered file at byte `start`."""
    handle = open(path, "rb", buffering=0)  # noqa: SIM115 - closed by the group
    handle.seek(start)
    return handle, os.fstat(handle.fileno()).st_size


class _OpenShard:
    def __init__(self, path: str, uri: str, offset: int, frame: int, opener: Opener) -> None:
        self.uri = uri
        self.file, size = opener(path, uri, offset * frame)
        if size % frame:
            self.file.close()
            raise DataError(f"{uri}: {size} bytes is not a whole number of {frame}-byte packed records "
                            f"(a shard of another layout, or compressed)")
        self.total = size // frame
        self.next = offset  # the next record to read

    @property
    def remaining(self) -> int:
        return self.total - self.next


def _read_chunk(shards: list[_OpenShard], layout: FrameLayout, space: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The next rounds of a group read into `space` ([rows, frame], reused): (its frames [n, frame],
    row order, shard index and record index per row)."""
    active = [s for s in shards if s.remaining]
    rounds = max(1, len(space) // len(active))
    takes = np.array([min(rounds, s.remaining) for s in shards])
    buffer = space[: int(takes.sum())]
    base = np.concatenate([[0], np.cumsum(takes)[:-1]])
    first_record = np.array([s.next for s in shards])
    for shard, at, take in zip(shards, base, takes, strict=True):
        if take:
            view = memoryview(buffer[at : at + take]).cast("B")
            got = shard.file.readinto(view)
            if got != take * layout.frame:
                raise DataError(f"{shard.uri}: record {shard.next}: short read ({got} of {take * layout.frame} bytes)")
            shard.next += int(take)
    # Round-major order: round r takes shard i while it has records left (r < takes[i]).
    round_index, shard_index = np.nonzero(np.arange(int(takes.max()))[:, None] < takes[None, :])
    order = base[shard_index] + round_index
    _check_frames(buffer, layout, shards, base, first_record)
    return buffer, order, shard_index, first_record[shard_index] + round_index


def _check_frames(buffer: np.ndarray, layout: FrameLayout, shards: list[_OpenShard], base: np.ndarray,
                  first_record: np.ndarray) -> None:
    lengths = buffer[:, :8].copy().view("<u8")[:, 0]
    bad = lengths != layout.record.size
    headers = buffer[:, layout.header_at]
    bad |= (headers != layout.header).any(axis=1)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        index = int(np.searchsorted(base, row, side="right") - 1)
        record = int(first_record[index] + row - base[index])
        what = (f"length {int(lengths[row])}, packed records are {layout.record.size} bytes"
                if lengths[row] != layout.record.size else "its header differs from the layout's")
        raise DataError(f"{shards[index].uri}: record {record}: not a record of this packed layout ({what})")


def frame_batches(groups: Iterator[tuple[list[tuple[str, str]], list[int]]], layout: FrameLayout,
                  batch_size: int, drop_remainder: bool, opener: Opener = open_local,
                  chunk_rows: int | None = None) -> Iterator[FrameBatch]:
    """Batches of `batch_size` rows from groups of (path, URI) pairs and records to skip in each;
    `opener` opens a shard (local files by default; components.records.remote for gs://)."""
    pending: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, tuple[str, ...]]] = []
    pending_rows = 0
    chunk_rows = chunk_rows or CHUNK_ROWS
    spaces: list[np.ndarray] = []  # chunk buffers, reused once no pending piece of a batch is in one
    for pairs, offsets in groups:
        shards: list[_OpenShard] = []
        try:
            for (path, uri), offset in zip(pairs, offsets, strict=True):
                shards.append(_OpenShard(path, uri, offset, layout.frame, opener))
            uris = tuple(s.uri for s in shards)
            while any(s.remaining for s in shards):
                space = _free_space(spaces, pending, chunk_rows, layout.frame)
                buffer, order, shard_index, record_index = _read_chunk(shards, layout, space)
                start = 0
                while start < len(order):
                    take = min(batch_size - pending_rows, len(order) - start)
                    pending.append((buffer, order[start : start + take], shard_index[start : start + take],
                                    record_index[start : start + take], uris))
                    pending_rows += take
                    start += take
                    if pending_rows == batch_size:
                        yield _assemble(pending, layout)
                        pending, pending_rows = [], 0
        finally:
            for shard in shards:
                shard.file.close()
    if pending_rows and not drop_remainder:
        yield _assemble(pending, layout)


def _free_space(spaces: list[np.ndarray], pending: list, rows: int, frame: int) -> np.ndarray:
    """A chunk buffer no pending piece points into (usually one of two), else a new one."""
    busy = {id(piece[0].base) for piece in pending}
    for space in spaces:
        if id(space) not in busy:
            return space
    spaces.append(np.empty((rows, frame), dtype=np.uint8))
    return spaces[-1]


def _assemble(pieces: list, layout: FrameLayout) -> FrameBatch:
    parts = {}
    for part, (start, stop, dtype, values) in layout.slices.items():
        arrays = [buffer[rows, start:stop] for buffer, rows, _, _, _ in pieces]
        raw = arrays[0] if len(arrays) == 1 else np.concatenate(arrays)
        parts[part] = raw.view(dtype).reshape(len(raw), values) if dtype != "u1" else raw
    shards: list[str] = []
    shard_of_row = []
    for _, _, shard_index, _, uris in pieces:
        offset = len(shards)
        shards.extend(uris)
        shard_of_row.append(shard_index + offset)
    return FrameBatch(parts, tuple(shards), np.concatenate(shard_of_row),
                      np.concatenate([records for _, _, _, records, _ in pieces]))


def prefetched(items: Iterator, depth: int) -> Iterator:
    """`items` produced by a background thread, up to `depth` ahead (reads and copies overlap the
    consumer's work); its exception is raised here, in order. Closing the generator stops the thread."""
    import contextlib
    import queue
    import threading

    ready: queue.Queue = queue.Queue(maxsize=max(1, depth))
    stop = threading.Event()
    done = object()

    def produce() -> None:
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        ready.put((item, None), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            ready.put((done, None))
        except BaseException as exc:  # handed to the consumer
            ready.put((done, exc))
        finally:
            close = getattr(items, "close", None)
            if close is not None:
                close()

    thread = threading.Thread(target=produce, name="frame-reader", daemon=True)
    thread.start()
    try:
        while True:
            item, error = ready.get()
            if item is done:
                if error is not None:
                    raise error
                return
            yield item
    finally:
        stop.set()
        while thread.is_alive():
            with contextlib.suppress(queue.Empty):
                ready.get(timeout=0.05)
        thread.join()
