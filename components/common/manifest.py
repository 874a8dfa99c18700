"""Manifests: the list of files a step published, written last.

A directory without `_MANIFEST.json` is incomplete (a crashed or running writer), and
readers trust only the files a manifest lists, so nothing half-written is ever consumed.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import mmap
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from components.common import storage
from components.common.errors import DataError, StorageError

MANIFEST_NAME = "_MANIFEST.json"
MANIFEST_VERSION = 1


@dataclass(frozen=True)
class ManifestFile:
    path: str  # relative to the manifest's directory, `/`-separated
    records: int
    bytes: int
    sha256: str
    # sha256 of each storage.BLOCK_BYTES block (convert's shards): lets the reader check each
    # ranged gs:// read before it uses it, instead of spooling the whole shard first
    block_sha256: tuple[str, ...] = ()


@dataclass(frozen=True)
class Manifest:
    kind: str  # what wrote the files: "raw-parquet" (datagen), "tfrecord" (convert), "evaluation"
    schema_hash: str
    files: tuple[ManifestFile, ...]
    created_at: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    version: int = MANIFEST_VERSION

    @property
    def total_records(self) -> int:
        return sum(f.records for f in self.files)

    @property
    def total_bytes(self) -> int:
        return sum(f.bytes for f in self.files)

    def uris(self, directory: str) -> list[str]:
        """Absolute URIs of the listed files, in manifest order."""
        return [storage.join(directory, f.path) for f in self.files]

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        for entry in data["files"]:
            if not entry["block_sha256"]:
                del entry["block_sha256"]
        data["total_records"] = self.total_records
        data["total_bytes"] = self.total_bytes
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any], source: str) -> Manifest:
        try:
            files = tuple(ManifestFile(**{**f, "block_sha256": tuple(f.get("block_sha256", ()))})
                          for f in data["files"])
            return cls(
                kind=data["kind"], schema_hash=data["schema_hash"], files=files,
                created_at=data.get("created_at", ""), extra=data.get("extra", {}),
                version=int(data.get("version", MANIFEST_VERSION)),
            )
        except (KeyError, TypeError) as exc:
            raise DataError(f"{source}: malformed manifest ({exc})") from exc


def manifest_uri(directory: str) -> str:
    return storage.join(directory, MANIFEST_NAME)


def write_manifest(directory: str, kind: str, schema_hash: str,
                   files: Iterable[ManifestFile], extra: dict[str, Any] | None = None) -> Manifest:
    """Publish the manifest of `directory`; call only after every listed file is written."""
    manifest = Manifest(
        kind=kind, schema_hash=schema_hash,
        files=tuple(sorted(files, key=lambda f: f.path)),
        created_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        extra=dict(extra or {}),
    )
    storage.write_json(manifest_uri(directory), manifest.to_json())
    return manifest


def read_manifest(location: str) -> tuple[Manifest, str]:
    """Load a manifest given its directory or the manifest file; returns (manifest, directory)."""
    location = location.rstrip("/")
    if storage.basename(location) == MANIFEST_NAME:
        uri, directory = location, storage.parent(location)
    else:
        uri, directory = manifest_uri(location), location
    try:
        data = storage.read_json(uri)
    except FileNotFoundError as exc:
        raise StorageError(
            f"{uri}: no manifest; the output is incomplete (interrupted writer) or not a recap output"
        ) from exc
    return Manifest.from_json(data, uri), directory


def sha256_of(uri: str) -> str:
    digest = hashlib.sha256()
    with storage.open_read(uri) as handle:
        if not storage.is_gcs(uri) and os.fstat(handle.fileno()).st_size:
            # Hashed straight from the page cache (mmap): ~1.5x less CPU than copying it into chunks
            # first; verification is the reader's largest per-byte cost after reading the records.
            with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
                digest.update(mapped)
            return digest.hexdigest()
        while chunk := handle.read(storage.READ_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def check_file(uri: str, entry: ManifestFile, size: int, sha256: str | None = None) -> None:
    """Raise naming `uri` when its size (and, when given, its sha256) differ from its manifest entry."""
    if size != entry.bytes:
        raise DataError(f"{uri}: size {size} bytes, manifest says {entry.bytes} (truncated or replaced)")
    if sha256 is not None and sha256 != entry.sha256:
        raise DataError(f"{uri}: sha256 differs from the manifest (corrupt or replaced)")


def verify_file(uri: str, entry: ManifestFile, check_sha256: bool = True) -> None:
    """The file exists with the recorded size (and hash); the one check every reader of a manifest uses."""
    try:
        size = storage.size(uri)
    except FileNotFoundError as exc:
        raise DataError(f"{uri}: listed in the manifest but missing") from exc
    check_file(uri, entry, size)
    if check_sha256:
        check_file(uri, entry, size, sha256_of(uri))


def verify_manifest(manifest: Manifest, directory: str, check_sha256: bool = False) -> None:
    """Every listed file exists with the recorded size (and hash); raise naming the first bad one."""
    for entry, uri in zip(manifest.files, manifest.uris(directory), strict=True):
        verify_file(uri, entry, check_sha256)
