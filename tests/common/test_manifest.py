from __future__ import annotations

import pytest

from components.common import storage
from components.common.errors import DataError, StorageError
from components.common.manifest import (
    ManifestFile,
    read_manifest,
    sha256_of,
    verify_manifest,
    write_manifest,
)


def publish(directory: str, names: list[str]) -> list[ManifestFile]:
    entries = []
    for i, name in enumerate(names):
        with storage.open_write(storage.join(directory, name)) as out:
            out.write(name.encode() * (i + 1))
        entries.append(ManifestFile(path=name, records=i + 1, bytes=out.bytes_written, sha256=out.sha256))
    return entries


def test_round_trip_and_verify(storage_root: str) -> None:
    directory = storage.join(storage_root, "split")
    entries = publish(directory, ["b.gz", "a.gz"])
    write_manifest(directory, "tfrecord", "abc123", entries, extra={"split": "train"})
    manifest, where = read_manifest(directory)
    assert where == directory
    assert [f.path for f in manifest.files] == ["a.gz", "b.gz"]
    assert manifest.total_records == 3 and manifest.schema_hash == "abc123"
    assert manifest.extra == {"split": "train"}
    assert manifest.uris(directory) == [storage.join(directory, "a.gz"), storage.join(directory, "b.gz")]
    verify_manifest(manifest, directory, check_sha256=True)
    # the manifest file itself is an accepted location too
    assert read_manifest(storage.join(directory, "_MANIFEST.json"))[0] == manifest


@pytest.mark.parametrize("size", [0, 1, 3 << 20])
def test_sha256_of_is_the_writers_hash_for_any_size(storage_root: str, size: int) -> None:
    # local files are hashed through an mmap (which cannot map an empty file), gs:// in chunks
    uri = storage.join(storage_root, f"blob-{size}")
    with storage.open_write(uri) as out:
        out.write(bytes(range(256)) * (size // 256) + b"x" * (size % 256))
    assert sha256_of(uri) == out.sha256


def test_missing_manifest_means_incomplete(storage_root: str) -> None:
    directory = storage.join(storage_root, "half-written")
    publish(directory, ["a.gz"])
    with pytest.raises(StorageError, match=r"half-written/_MANIFEST\.json: no manifest; the output is incomplete"):
        read_manifest(directory)


def test_verify_names_the_bad_file(storage_root: str) -> None:
    directory = storage.join(storage_root, "split")
    entries = publish(directory, ["a.gz", "b.gz", "c.gz"])
    write_manifest(directory, "tfrecord", "h", entries)
    manifest, _ = read_manifest(directory)
    storage.write_bytes(storage.join(directory, "b.gz"), b"x" * entries[1].bytes)  # same size, other bytes
    verify_manifest(manifest, directory)  # sizes still match
    with pytest.raises(DataError, match=r"b\.gz: sha256 differs"):
        verify_manifest(manifest, directory, check_sha256=True)
    storage.delete(storage.join(directory, "c.gz"))
    with pytest.raises(DataError, match=r"c\.gz: listed in the manifest but missing"):
        verify_manifest(manifest, directory)
