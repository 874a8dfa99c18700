"""Which raw Parquet files a step reads: the one lister validate and convert share.

The input is one Parquet file, a manifest file, or a directory (prefix). A directory with
`_MANIFEST.json` means exactly the files it lists (a writer's published set); otherwise every
Parquet file below it (`.parquet`, `.parq`, `.pq`). Names starting with `_` or `.` (markers,
checksums) are never data. Everything else is returned as `unlisted` (Parquet the manifest does
not list) or `other` (not Parquet), for validate to report; convert ignores them.
"""

from __future__ import annotations

from dataclasses import dataclass

from components.common import storage
from components.common.errors import StorageError
from components.common.manifest import MANIFEST_NAME, ManifestFile, read_manifest

PARQUET_SUFFIXES = (".parquet", ".parq", ".pq")


@dataclass(frozen=True)
class RawInputs:
    files: tuple[str, ...]  # the Parquet files to read, in manifest or listing order
    expected: dict[str, ManifestFile]  # the manifest's entry per file, when there is a manifest
    from_manifest: bool
    unlisted: tuple[str, ...] = ()  # Parquet files below the input that the manifest does not list
    other: tuple[str, ...] = ()  # files below the input that are not Parquet (markers excluded)


def is_parquet(uri: str) -> bool:
    return uri.endswith(PARQUET_SUFFIXES)


def _is_marker(uri: str) -> bool:
    return storage.basename(uri).startswith(("_", "."))


def list_raw_inputs(input_uri: str) -> RawInputs:
    """Resolve the Parquet files under `input_uri`; StorageError when the input does not exist."""
    input_uri = input_uri.rstrip("/")
    if storage.basename(input_uri) == MANIFEST_NAME:
        input_uri = storage.parent(input_uri)
    elif is_parquet(input_uri) and not storage.is_dir(input_uri):
        if not storage.exists(input_uri):
            raise StorageError(f"{input_uri}: input not found")
        return RawInputs((input_uri,), {}, False)
    if not storage.is_dir(input_uri):
        raise StorageError(f"{input_uri}: input not found (expected a directory or prefix of Parquet files)")
    everything = storage.list_uris(input_uri)
    data = [uri for uri in everything if not _is_marker(uri)]
    if storage.join(input_uri, MANIFEST_NAME) in everything:
        manifest, directory = read_manifest(input_uri)
        files = manifest.uris(directory)
        listed = set(files)
        strays = [uri for uri in data if uri not in listed]
        return RawInputs(tuple(files), dict(zip(files, manifest.files, strict=True)), True,
                         unlisted=tuple(u for u in strays if is_parquet(u)),
                         other=tuple(u for u in strays if not is_parquet(u)))
    return RawInputs(tuple(u for u in data if is_parquet(u)), {}, False,
                     other=tuple(u for u in data if not is_parquet(u)))
