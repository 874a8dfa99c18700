"""gs:// shards read in place, block by block, each block checked before any of its bytes is used.

Convert records the sha256 of every `storage.BLOCK_BYTES` block of a shard in the manifest
(`ManifestFile.block_sha256`). The frame reader (components.records.frames) then reads a gs://
shard as a sequence of ranged GETs, each streamed straight into its own buffer
(`storage.read_range_into`), hashed and compared with the manifest before the first record in
it is decoded, with the next blocks already in flight on a shared pool. Nothing is spooled to
a local file, so a shard costs the reader one receive, one hash and the decode, close to what a
local shard costs (a page-cache read and the hash); and memory is bounded by the blocks in
flight (`ahead` + 1 per shard of the group), whatever the shard's size.

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

AHEAD = 2  # blocks fetched ahead of the one being read, per shard


def streamable(entry: ManifestFile) -> bool:
    """Whether the manifest entry carries a block hash for every block of the shard."""
    blocks = -(-entry.bytes // storage.BLOCK_BYTES)
    return bool(entry.block_sha256) and len(entry.block_sha256) == blocks


class BlockStream:
    """Sequential `readinto` over a gs:// shard from byte `start`, in verified blocks."""

    def __init__(self, uri: str, entry: ManifestFile, start: int, pool: ThreadPoolExecutor,
                 ahead: int = AHEAD) -> None:
        if not streamable(entry):
            raise DataError(f"{uri}: the manifest has no block hashes for this shard")
        self.uri, self.entry, self.pool = uri, entry, pool
        self.index, self.skip = divmod(start, storage.BLOCK_BYTES)
        self.next_fetch = self.index
        self.pending: deque[Future] = deque()
        self.current: memoryview | None = None
        self.ahead = ahead
        self._fill()

    @property
    def blocks(self) -> int:
        return len(self.entry.block_sha256)

    def _fill(self) -> None:
        while self.next_fetch < self.blocks and len(self.pending) <= self.ahead:
            self.pending.append(self.pool.submit(self._fetch, self.next_fetch))
            self.next_fetch += 1

    def _fetch(self, index: int) -> np.ndarray:
        begin = index * storage.BLOCK_BYTES
        size = min(storage.BLOCK_BYTES, self.entry.bytes - begin)
        buffer = np.empty(size, dtype=np.uint8)
        try:
            got = storage.read_range_into(self.uri, begin, buffer)
        except FileNotFoundError:
            raise DataError(f"{self.uri}: listed in the manifest but missing") from None
        if got != size:
            raise DataError(f"{self.uri}: size {begin + got} bytes, manifest says {self.entry.bytes} "
                            "(truncated or replaced)")
        if hashlib.sha256(buffer).hexdigest() != self.entry.block_sha256[index]:
            raise DataError(f"{self.uri}: bytes {begin}-{begin + size - 1} (block {index}) differ from the "
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
