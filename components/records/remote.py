"""gs:// shards read in place, block by block, each block checked before any of its bytes is used.

Convert records the sha256 of every `storage.BLOCK_BYTES` block of a shard in the manifest
(`ManifestFile.block_sha256`). The frame reader (components.records.frames) then reads a gs://
shard as a sequence of ranged GETs of two blocks each, streamed straight into their own buffer
(`storage.read_range_into`); each block is hashed and compared with the manifest before the
first record in it is decoded, and the next GET is already in flight on a shared pool. Nothing
is spooled to a local file, so a shard costs the reader one receive, one hash and the decode,
close to what a local shard costs (a page-cache read and the hash); and memory is bounded by the
GETs in flight (`(ahead + 1) x span` blocks per shard of the group), whatever the shard's size.

A shard written before block hashes existed, or a read with `skip_corrupt` (which must be able
to drop a whole shard before any of it is used), goes through the downloading ShardProvider.
"""

from __future__ import annotations

import hashlib
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np

from components.common import storage
from components.common.errors import DataError
from components.common.manifest import ManifestFile

SPAN = 2  # blocks per ranged GET: fewer requests, each checked block by block
AHEAD = 1  # GETs in flight ahead of the one being read, per shard (so 2 x 16 MiB per shard)


def streamable(entry: ManifestFile) -> bool:
    """Whether the manifest entry carries a block hash for every block of the shard."""
    blocks = -(-entry.bytes // storage.BLOCK_BYTES)
    return bool(entry.block_sha256) and len(entry.block_sha256) == blocks


class BlockStream:
    """Sequential `readinto` over a gs:// shard from byte `start`, in verified blocks."""

    def __init__(self, uri: str, entry: ManifestFile, start: int, pool: ThreadPoolExecutor,
                 ahead: int = AHEAD, span: int = SPAN) -> None:
        if not streamable(entry):
            raise DataError(f"{uri}: the manifest has no block hashes for this shard")
        self.uri, self.entry, self.pool = uri, entry, pool
        self.index, self.skip = divmod(start, storage.BLOCK_BYTES)
        self.next_fetch = self.index
        self.pending: deque[Future] = deque()
        self.current: memoryview | None = None
        self.ahead, self.span = ahead, max(1, span)
        self._fill()

    @property
    def blocks(self) -> int:
        return len(self.entry.block_sha256)

    def _fill(self) -> None:
        while self.next_fetch < self.blocks and len(self.pending) <= self.ahead:
            count = min(self.span, self.blocks - self.next_fetch)
            self.pending.append(self.pool.submit(self._fetch, self.next_fetch, count))
            self.next_fetch += count

    def _fetch(self, first: int, count: int) -> np.ndarray:
        """Blocks first..first+count-1 in one ranged GET, each compared with its manifest hash."""
        block = storage.BLOCK_BYTES
        begin = first * block
        size = min(count * block, self.entry.bytes - begin)
        buffer = np.empty(size, dtype=np.uint8)
        try:
            got = storage.read_range_into(self.uri, begin, buffer)
        except FileNotFoundError:
            raise DataError(f"{self.uri}: listed in the manifest but missing") from None
        if got != size:
            raise DataError(f"{self.uri}: size {begin + got} bytes, manifest says {self.entry.bytes} "
                            "(truncated or replaced)")
        for index in range(first, first + count):
            at = (index - first) * block
            if hashlib.sha256(buffer[at : at + block]).hexdigest() != self.entry.block_sha256[index]:
                end = begin + min(at + block, size) - 1
                raise DataError(f"{self.uri}: bytes {begin + at}-{end} (block {index}) differ from the "
                                "manifest's sha256 (corrupt or replaced)")
        return buffer

    def _next_block(self) -> bool:
        if not self.pending:
            return False
        block = self.pending.popleft().result()
        self._fill()
        self.current = memoryview(block)[self.skip :]
        self.skip = 0
        return True

    def readinto(self, view: memoryview) -> int:
        """Fill `view` (fewer bytes only at the shard's end)."""
        got = 0
        while got < len(view):
            if (self.current is None or not len(self.current)) and not self._next_block():
                break
            n = min(len(view) - got, len(self.current))
            view[got : got + n] = self.current[:n]
            self.current = self.current[n:]
            got += n
        return got

    def close(self) -> None:
        for future in self.pending:
            future.cancel()
        self.pending.clear()
        self.current = None
