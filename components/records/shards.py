"""Which shards a rank reads, in which order, and how they reach TensorFlow verified.

Record order is defined here so it is deterministic and resumable in O(shards):
- rank r of W owns the manifest's shards r::W;
- each epoch orders them (shuffled from (seed, rank, epoch), or manifest order) and cuts
  the order into groups of `cycle` shards; a group is read round-robin, one record per
  shard in turn (a shard that runs out drops out of the turn), groups one after another.
Because every shard's record count is in the manifest, the position after `n` records is
computed, not replayed: `resume_point` returns the group and each shard's offset.

`ShardProvider` hands the reader one group at a time as local files: local shards after a
size and sha256 check, gs:// shards with block hashes as their URIs when the reader streams
them itself (components.records.remote), other gs:// shards downloaded (through `storage`, since TensorFlow's GCS
client cannot reach the emulator) into a cache that holds the current group and the next,
fetched in the background, several shards at once, while the current one is read. A split read again from its start
(the validation data, at every evaluation) passes a `VerifiedShards` that outlives the
reads: its shards are hashed and downloaded once, not at every read.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
import threading
import weakref
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from components.common import storage
from components.common.errors import DataError
from components.common.manifest import Manifest, ManifestFile, check_file, verify_file
from components.records.remote import streamable

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Shard:
    uri: str
    entry: ManifestFile  # what the manifest says about it: records, bytes, sha256

    @property
    def records(self) -> int:
        return self.entry.records


@dataclass(frozen=True)
class GroupRead:
    """One group as TensorFlow reads it: shards in turn order, records to skip in each."""

    epoch: int
    shards: tuple[Shard, ...]
    offsets: tuple[int, ...]


def rank_shards(manifest: Manifest, directory: str, rank: int, world_size: int) -> list[Shard]:
    """Shards r::W of the manifest; fewer shards than ranks is an error (a rank would idle)."""
    if world_size < 1 or not 0 <= rank < world_size:
        raise DataError(f"rank {rank} is not in [0, world_size={world_size})")
    count = len(manifest.files)
    if count < world_size:
        raise DataError(
            f"{directory}: manifest lists {count} shards, fewer than world_size={world_size} ranks; "
            f"convert with --shards >= {world_size}"
        )
    entries: list[ManifestFile] = list(manifest.files)[rank::world_size]
    return [Shard(storage.join(directory, f.path), f) for f in entries]


def epoch_order(shards: list[Shard], epoch: int, shuffle: bool, seed: int, rank: int) -> list[Shard]:
    if not shuffle:
        return list(shards)
    permutation = np.random.default_rng([seed, rank, epoch]).permutation(len(shards))
    return [shards[i] for i in permutation]


def epoch_groups(shards: list[Shard], cycle: int) -> list[list[Shard]]:
    return [shards[i : i + cycle] for i in range(0, len(shards), cycle)]


def round_robin_offsets(counts: list[int], consumed: int) -> tuple[list[int], int]:
    """Per-shard records already read after `consumed` round-robin records, and where the turn is.

    Returns (offsets, first): reading resumes with shard `first` of the group, then in turn.
    """
    lo, hi = 0, max(counts, default=0)
    while lo < hi:  # largest full round r with sum(min(count, r)) <= consumed
        mid = (lo + hi + 1) // 2
        if sum(min(c, mid) for c in counts) <= consumed:
            lo = mid
        else:
            hi = mid - 1
    rounds = lo
    remaining = consumed - sum(min(c, rounds) for c in counts)
    offsets = [min(c, rounds) for c in counts]
    first = 0
    active = [i for i, c in enumerate(counts) if c > rounds]
    for i in active[:remaining]:
        offsets[i] += 1
    if remaining:
        first = active[remaining] if remaining < len(active) else 0
    return offsets, first


def group_reads(shards: list[Shard], cycle: int, shuffle: bool, seed: int, rank: int,
                repeat: bool, skip_records: int) -> Iterator[GroupRead]:
    """Every group to read, in order, starting at the record position `skip_records`."""
    per_epoch = sum(s.records for s in shards)
    if repeat and per_epoch == 0:
        raise DataError(f"repeat=True but this rank's {len(shards)} shards hold no records")
    epoch, skip = divmod(skip_records, per_epoch) if per_epoch else (0, 0)
    if epoch and not repeat:
        return
    while True:
        for group in epoch_groups(epoch_order(shards, epoch, shuffle, seed, rank), cycle):
            total = sum(s.records for s in group)
            if skip >= total:  # consumed before the resume point, or empty
                skip -= total
                continue
            offsets, first = round_robin_offsets([s.records for s in group], skip)
            skip = 0
            order = list(range(first, len(group))) + list(range(first))
            yield GroupRead(epoch, tuple(group[i] for i in order), tuple(offsets[i] for i in order))
        if not repeat:
            return
        epoch += 1


def _stamp(path: str) -> tuple[int, int] | None:
    try:
        stat = os.stat(path)
    except FileNotFoundError:
        return None
    return stat.st_size, stat.st_mtime_ns


class VerifiedShards:
    """Shards already checked against the manifest, kept for the next read of the same split.

    Local shards are remembered by (size, mtime_ns), so a replaced file is checked again;
    gs:// shards keep their verified download under `directory` (one file per shard, never
    evicted: as many as the reads touched) until `close` or garbage collection.
    """

    def __init__(self, cache_dir: str | None = None) -> None:
        self.local: dict[str, tuple[int, int]] = {}  # local path -> (size, mtime_ns) checked
        self.downloads: dict[str, tuple[int, int]] = {}  # gs:// uri -> stamp of its verified copy
        self.lock = threading.Lock()
        self.directory = cache_dir or tempfile.mkdtemp(prefix="recap-shards-")
        os.makedirs(self.directory, exist_ok=True)
        self._paths: set[str] = set()
        if cache_dir is None:
            self._finalizer = weakref.finalize(self, shutil.rmtree, self.directory, True)
        else:
            self._finalizer = weakref.finalize(self, _unlink_all, self._paths)

    def path(self, uri: str) -> str:
        digest = hashlib.sha1(uri.encode()).hexdigest()[:12]
        path = os.path.join(self.directory, f"kept-{digest}-{storage.basename(uri)}")
        with self.lock:
            self._paths.add(path)
        return path

    def close(self) -> None:
        self._finalizer()


def _unlink_all(paths: set[str]) -> None:
    for path in paths:
        if os.path.exists(path):
            os.unlink(path)


FETCHERS = 4  # shards downloaded and hashed at once (the GCS client and hashlib release the GIL)


class ShardProvider:
    """Yields groups as local file paths, verified; downloads gs:// shards into a bounded cache.

    Every shard of the next group is fetched while the current group is read, up to
    `fetchers` at a time, each hashed as its bytes arrive: the cache never holds more than
    two groups, and a slow shard does not hold up the others.

    With `verified`, checks and downloads are looked up in and added to it instead, and
    nothing it holds is evicted.
    """

    def __init__(self, reads: Iterator[GroupRead], skip_corrupt: bool, cache_dir: str | None,
                 verified: VerifiedShards | None = None, fetchers: int = FETCHERS,
                 stream_gcs: bool = False) -> None:
        self._reads = reads
        # gs:// shards with block hashes are handed over as their URIs, to be read in place
        # (components.records.remote) by a reader that can: the frame reader
        self.stream_gcs = stream_gcs
        self.entries: dict[str, ManifestFile] = {}  # URI -> manifest entry of every shard handed over
        self.skip_corrupt = skip_corrupt
        self.skipped: list[str] = []
        self.error: BaseException | None = None
        self.current: tuple[str, ...] = ()
        self.current_paths: tuple[str, ...] = ()  # the local copies of `current`, still on disk
        self._previous: tuple[tuple[str, str], ...] = ()  # (path, URI) of the group before (prefetched batches)
        self._kept = verified  # set: downloads are kept in it for the next read, never evicted
        self._checked = verified or VerifiedShards(cache_dir)  # else: this read's own, closed with it
        self._cache_dir = self._checked.directory
        self._lock = self._checked.lock
        self._pool = ThreadPoolExecutor(max_workers=max(1, fetchers), thread_name_prefix="shard-fetch")
        self._cached: list[str] = []
        self._downloaded: set[str] = set()

    # -- fetching and verification (background thread) --------------------------------

    def _cache_path(self, shard: Shard, epoch: int) -> str:
        digest = hashlib.sha1(shard.uri.encode()).hexdigest()[:12]
        return os.path.join(self._cache_dir, f"e{epoch}-{digest}-{storage.basename(shard.uri)}")

    def _fetch(self, shard: Shard, epoch: int) -> str:
        """Local path of a verified copy of `shard`; DataError naming the shard when it is bad."""
        self.entries[shard.uri] = shard.entry
        if storage.is_gcs(shard.uri) and self.stream_gcs and streamable(shard.entry):
            return shard.uri  # verified block by block as it is read
        if storage.is_gcs(shard.uri):
            if self._kept is not None:
                return self._kept_download(shard)
            return self._download(shard, self._cache_path(shard, epoch))
        stamp = _stamp(shard.uri)
        with self._lock:
            known = stamp is not None and self._checked.local.get(shard.uri) == stamp
        if not known:
            verify_file(shard.uri, shard.entry)  # the stamp is from before: a file replaced meanwhile is checked again
            with self._lock:
                self._checked.local[shard.uri] = stamp
        return shard.uri

    def _kept_download(self, shard: Shard) -> str:
        """The verified copy an earlier read left in `verified`, else a new one, kept there."""
        kept = self._kept
        path = kept.path(shard.uri)
        with self._lock:
            known = kept.downloads.get(shard.uri)
        if known is not None and _stamp(path) == known:
            return path
        self._download(shard, path, evictable=False)
        with self._lock:
            kept.downloads[shard.uri] = _stamp(path)
        return path

    def _download(self, shard: Shard, path: str, evictable: bool = True) -> str:
        digest, size = hashlib.sha256(), 0
        tmp = f"{path}.part"
        try:
            with storage.open_read(shard.uri) as src, open(tmp, "wb") as dst:
                while chunk := src.read(storage.READ_CHUNK_BYTES):
                    digest.update(chunk)
                    dst.write(chunk)
                    size += len(chunk)
        except FileNotFoundError:
            raise DataError(f"{shard.uri}: listed in the manifest but missing") from None
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
        try:
            check_file(shard.uri, shard.entry, size, digest.hexdigest())
        except DataError:
            os.unlink(tmp)
            raise
        os.replace(tmp, path)
        if evictable:
            with self._lock:
                self._downloaded.add(path)
        return path

    def _prepare_one(self, shard: Shard, offset: int, epoch: int) -> tuple[str, Shard, int] | DataError:
        try:
            return self._fetch(shard, epoch), shard, offset
        except DataError as exc:
            return exc

    def _submit(self, read: GroupRead | None) -> list[Future] | None:
        """Start fetching (and verifying) every shard of a group, `fetchers` at a time."""
        if read is None:
            return None
        return [self._pool.submit(self._prepare_one, shard, offset, read.epoch)
                for shard, offset in zip(read.shards, read.offsets, strict=True)]

    # -- the generator TensorFlow pulls from ---------------------------------------------

    def groups(self) -> Iterator[tuple[list[bytes], list[int]]]:
        """(local paths, records to skip) per group; the next group is fetched meanwhile."""
        try:
            upcoming = self._submit(next(self._reads, None))
            while upcoming is not None:
                prepared = [future.result() for future in upcoming]
                upcoming = self._submit(next(self._reads, None))
                paths, offsets, uris = [], [], []
                for item in prepared:
                    if isinstance(item, DataError):
                        if not self.skip_corrupt:
                            raise item
                        self.skipped.append(str(item))
                        log.warning("skipped a bad shard (%d so far): %s", len(self.skipped), item)
                        continue
                    path, shard, offset = item
                    paths.append(path.encode())
                    offsets.append(offset)
                    uris.append(shard.uri)
                # The flat_map in front of us asks for a group only after the previous one is
                # exhausted, so the previous group's cached copies are no longer needed.
                self._evict(self._cached)
                if self._kept is None:
                    self._cached = [p.decode() for p, u in zip(paths, uris, strict=True) if storage.is_gcs(u)]
                self._previous = tuple(zip(self.current_paths, self.current, strict=True))
                self.current = tuple(uris)
                self.current_paths = tuple(p.decode() for p in paths)
                if paths:
                    yield paths, offsets
        except Exception as exc:  # kept for the consumer: TF's wrapping loses the type
            self.error = exc
            raise

    def recent(self) -> list[tuple[str, str]]:
        """(local path, URI) of the shards of this group and the one before that are still on disk."""
        pairs = [*zip(self.current_paths, self.current, strict=True), *self._previous]
        return [(path, uri) for path, uri in pairs if os.path.exists(path)]

    def find_unreadable(self, compression: str = "GZIP") -> tuple[str, str] | None:
        """(URI, TF's message) of the first shard of the current group that cannot be read through."""
        import tensorflow as tf

        for path, uri in zip(self.current_paths, self.current, strict=True):
            try:
                for _ in tf.data.TFRecordDataset(path, compression_type=compression):
                    pass
            except tf.errors.OpError as exc:
                return uri, exc.message
        return None

    def _evict(self, paths: list[str]) -> None:
        for path in paths:
            self._downloaded.discard(path)
            if os.path.exists(path):
                os.unlink(path)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        with self._lock:  # including a prefetched group nobody read
            self._evict(list(self._downloaded))
        if self._kept is None:
            self._checked.close()  # removes the temporary cache directory when it made one
