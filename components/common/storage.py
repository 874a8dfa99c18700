"""One small API over local paths and `gs://bucket/key` URIs.

Every byte the steps read or write goes through here, so local runs, the GCS emulator and
real GCS behave the same. Design choices:
- gs:// uses google-cloud-storage (it honours STORAGE_EMULATOR_HOST). TensorFlow's own GCS
  filesystem is never used: it cannot reach an emulator.
- Our retry policy is the only one: exponential backoff with full jitter on 429, 5xx and
  connection errors; the client's built-in retries are turned off so attempts are bounded.
- Writes are atomic. Locally: a temporary name in the same directory, then `os.replace`.
  On GCS an object becomes visible only when its upload completes, so a writer spools to a
  local temporary file and uploads it to the final name; a failed upload leaves nothing.
  A set of files (a dataset, a checkpoint) is published by a manifest written last.
- Streaming: reads of gs:// objects fetch ranged chunks, each chunk retried on its own.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import random
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any, TypeVar

from components.common.errors import DataError, StorageError, StorageUnavailable

log = logging.getLogger(__name__)

T = TypeVar("T")

GCS_SCHEME = "gs://"
TEMP_MARKER = ".tmp-"
READ_CHUNK_BYTES = 8 * 1024 * 1024
RETRYABLE_HTTP_STATUS = frozenset({408, 429, 500, 502, 503, 504})


# --------------------------------------------------------------------------- URIs


def is_gcs(uri: str) -> bool:
    return str(uri).startswith(GCS_SCHEME)


def _local_path(uri: str | os.PathLike[str]) -> Path:
    text = str(uri)
    return Path(text[len("file://") :] if text.startswith("file://") else text)


def split_gcs(uri: str) -> tuple[str, str]:
    """`gs://bucket/a/b` -> (`bucket`, `a/b`)."""
    rest = uri[len(GCS_SCHEME) :]
    bucket, _, key = rest.partition("/")
    if not bucket:
        raise StorageError(f"{uri}: no bucket in gs:// URI")
    return bucket, key


def join(base: str | os.PathLike[str], *parts: str) -> str:
    """Join URI segments with `/` (also for local paths)."""
    out = str(base)
    for part in parts:
        part = str(part).strip("/")
        if not part:
            continue
        out = f"{out.rstrip('/')}/{part}" if out else part
    return out


def basename(uri: str) -> str:
    return str(uri).rstrip("/").rsplit("/", 1)[-1]


def parent(uri: str) -> str:
    text = str(uri).rstrip("/")
    if is_gcs(text):
        bucket, key = split_gcs(text)
        return f"{GCS_SCHEME}{bucket}/{key.rsplit('/', 1)[0]}" if "/" in key else f"{GCS_SCHEME}{bucket}"
    return str(_local_path(text).parent)


def relative_to(uri: str, base: str) -> str:
    """Path of `uri` below `base`, with `/` separators."""
    uri, base = str(uri), str(base).rstrip("/")
    if not uri.startswith(base + "/"):
        raise StorageError(f"{uri} is not below {base}")
    return uri[len(base) + 1 :]


# --------------------------------------------------------------------------- retries


def _is_retryable(exc: BaseException) -> bool:
    from google.api_core import exceptions as gexc

    if isinstance(exc, gexc.GoogleAPICallError):
        return exc.code in RETRYABLE_HTTP_STATUS if exc.code is not None else False
    if isinstance(exc, ConnectionError | TimeoutError):
        return True
    try:
        import requests
        import urllib3

        if isinstance(
            exc,
            requests.exceptions.ConnectionError
            | requests.exceptions.ChunkedEncodingError
            | requests.exceptions.Timeout
            | urllib3.exceptions.HTTPError,
        ):
            return True
    except ImportError:  # pragma: no cover - both come with google-cloud-storage
        pass
    try:
        from google.auth.exceptions import TransportError
        from google.resumable_media.common import DataCorruption, InvalidResponse

        if isinstance(exc, TransportError | DataCorruption):
            return True
        if isinstance(exc, InvalidResponse):
            return getattr(exc.response, "status_code", None) in RETRYABLE_HTTP_STATUS
    except ImportError:  # pragma: no cover
        pass
    return False


class RetryPolicy:
    """Exponential backoff with full jitter: sleep U(0, min(cap, base * 2**attempt))."""

    def __init__(self, attempts: int | None = None, base_s: float = 0.1, cap_s: float = 8.0) -> None:
        self.attempts = attempts or int(os.environ.get("RECAP_STORAGE_RETRIES", "10"))
        self.base_s = base_s
        self.cap_s = cap_s

    def call(self, fn: Callable[[], T], what: str) -> T:
        for attempt in range(self.attempts):
            try:
                return fn()
            except Exception as exc:
                if not _is_retryable(exc) or attempt == self.attempts - 1:
                    raise
                delay = random.uniform(0, min(self.cap_s, self.base_s * 2**attempt))
                log.warning("retrying %s after %s (attempt %d/%d, sleep %.2fs)",
                            what, type(exc).__name__, attempt + 1, self.attempts, delay)
                time.sleep(delay)
        raise AssertionError("unreachable")


RETRY = RetryPolicy()


def _call(fn: Callable[[], T], what: str) -> T:
    """Run a GCS call under the retry policy; map 'not found' and the rest to our errors."""
    from google.api_core import exceptions as gexc

    try:
        return RETRY.call(fn, what)
    except gexc.NotFound as exc:
        raise FileNotFoundError(what) from exc
    except Exception as exc:
        if _is_retryable(exc):
            raise StorageUnavailable(f"{what}: gave up after {RETRY.attempts} attempts: {exc}") from exc
        if isinstance(exc, gexc.GoogleAPICallError):
            raise StorageError(f"{what}: {exc.code} {exc.message}") from exc
        raise


# --------------------------------------------------------------------------- GCS client

_client_lock = threading.Lock()
_clients: dict[int, Any] = {}


def gcs_client() -> Any:
    """A client per process (clients are not fork-safe); anonymous against an emulator."""
    from google.cloud import storage as gcs

    pid = os.getpid()
    with _client_lock:
        if pid not in _clients:
            if os.environ.get("STORAGE_EMULATOR_HOST"):
                from google.auth.credentials import AnonymousCredentials

                project = os.environ.get("GOOGLE_CLOUD_PROJECT", "recap-local")
                _clients[pid] = gcs.Client(project=project, credentials=AnonymousCredentials())
            else:
                _clients[pid] = gcs.Client()
            _read_environment_once(_clients[pid])
        return _clients[pid]


def _read_environment_once(client: Any) -> None:
    """requests looks up proxies and CA bundles in the environment on every call (~0.5 ms of CPU a
    request: it scans os.environ twice); every call of ours goes to the client's one endpoint, so
    the same settings are read once, here."""
    import requests

    session = client._http
    session.proxies.update(requests.utils.get_environ_proxies(client.api_endpoint))
    bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
    if bundle:
        session.verify = bundle
    session.trust_env = False


def _blob(uri: str) -> Any:
    bucket, key = split_gcs(uri)
    if not key:
        raise StorageError(f"{uri}: expected an object URI, got a bucket")
    return gcs_client().bucket(bucket).blob(key)


class _GcsRangeReader(io.RawIOBase):
    """Sequential reads of one object as ranged downloads, each retried on its own."""

    def __init__(self, uri: str) -> None:
        self.uri = uri
        self._blob = _blob(uri)
        _call(lambda: self._blob.reload(retry=None), uri)
        self.size = int(self._blob.size or 0)
        self._pos = 0
        self._generation = self._blob.generation

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self.size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def readinto(self, buffer: Any) -> int:
        if self._pos >= self.size:
            return 0
        end = min(self._pos + len(buffer), self.size) - 1
        start = self._pos
        data = _call(
            # One read of the whole range: the default streams it in 8 KB pieces through Python,
            # half of the client's CPU per byte (a shard's range is 8 MB, held in memory anyway).
            lambda: self._blob.download_as_bytes(
                start=start, end=end, checksum=None, retry=None,
                if_generation_match=self._generation, single_shot_download=True,
            ),
            self.uri,
        )
        n = len(data)
        buffer[:n] = data
        self._pos += n
        return n


# --------------------------------------------------------------------------- reading


def open_read(uri: str) -> IO[bytes]:
    """A buffered binary stream over a local file or a gs:// object."""
    if is_gcs(uri):
        return io.BufferedReader(_GcsRangeReader(uri), buffer_size=READ_CHUNK_BYTES)
    return open(_local_path(uri), "rb")  # noqa: SIM115 - caller closes


def read_range_into(uri: str, start: int, buffer: Any) -> int:
    """Fill `buffer` with the object's bytes from `start` (fewer at the object's end); returns how many.

    One ranged GET streamed straight into `buffer`: the client's own download path copies the body
    three more times (urllib3's buffer, the joined bytes, ours), which on the reader's gs:// path
    cost more CPU than hashing and decoding the same bytes. Retried as every GCS call is.
    """
    from urllib.parse import quote

    from google.api_core import exceptions as gexc

    bucket, key = split_gcs(uri)
    view = memoryview(buffer).cast("B")

    def fetch() -> int:
        client = gcs_client()
        url = f"{client.api_endpoint}/download/storage/v1/b/{bucket}/o/{quote(key, safe='')}?alt=media"
        headers = {"Range": f"bytes={start}-{start + len(view) - 1}", "Accept-Encoding": "identity"}
        with client._http.get(url, headers=headers, stream=True, timeout=(60, 300)) as response:
            if response.status_code == 416:  # the range starts at or past the end
                return 0
            if response.status_code not in (200, 206):
                raise gexc.from_http_response(response)
            if response.status_code == 200 and start:
                raise StorageError(f"{uri}: the server ignored the byte range")
            got = 0
            source = _body_reader(response)
            while got < len(view):
                n = source.readinto(view[got:])
                if not n:
                    break
                got += n
            return got

    return _call(fetch, uri)


def _body_reader(response: Any) -> Any:
    """Where to `readinto` a streamed response's body from: the http.client response under urllib3's
    when the body is sent as is (urllib3's own readinto reads into a new bytes object and copies
    it, a third more CPU per byte on the reader's gs:// path); urllib3's otherwise."""
    import http.client

    raw = response.raw
    plain = response.headers.get("Content-Encoding", "identity").lower() == "identity"
    inner = getattr(raw, "_fp", None)
    return inner if plain and isinstance(inner, http.client.HTTPResponse) else raw


def read_bytes(uri: str) -> bytes:
    if is_gcs(uri):
        blob = _blob(uri)
        return _call(lambda: blob.download_as_bytes(retry=None), uri)
    return _local_path(uri).read_bytes()


def read_text(uri: str) -> str:
    return read_bytes(uri).decode("utf-8")


def read_json(uri: str) -> Any:
    try:
        return json.loads(read_text(uri))
    except ValueError as exc:  # JSONDecodeError and bad UTF-8
        raise DataError(f"{uri}: not valid JSON ({exc})") from exc


def download(uri: str, local_path: str | os.PathLike[str]) -> Path:
    """Copy an object to a local file (atomically), e.g. a shard into the reader's cache."""
    target = Path(local_path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f"{TEMP_MARKER}{uuid.uuid4().hex}-{target.name}")
    try:
        if is_gcs(uri):
            blob = _blob(uri)
            _call(lambda: blob.download_to_filename(str(tmp), retry=None), uri)
        else:
            shutil.copyfile(_local_path(uri), tmp)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


# --------------------------------------------------------------------------- writing


BLOCK_BYTES = 8 * 1024 * 1024  # the unit of `block_sha256`: one ranged read of the reader's gs:// path


class _HashingWriter(io.RawIOBase):
    """Counts bytes and computes sha256 of everything written, for manifests: of the whole file,
    and of each BLOCK_BYTES block when `blocks` is set (a reader can then check a range before it
    uses it, without holding or spooling the whole file)."""

    def __init__(self, raw: IO[bytes], blocks: bool = False) -> None:
        self._raw = raw
        self._hash = hashlib.sha256()
        self.bytes_written = 0
        self._blocks: list[str] | None = [] if blocks else None
        self._block = hashlib.sha256()

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        self._raw.write(view)
        self._hash.update(view)
        if self._blocks is not None:
            self._hash_blocks(view)
        self.bytes_written += view.nbytes
        return view.nbytes

    def _hash_blocks(self, view: memoryview) -> None:
        """Feed `view` (written at offset `bytes_written`) to the block hashes, closing each full block."""
        at = 0
        while at < view.nbytes:
            room = BLOCK_BYTES - (self.bytes_written + at) % BLOCK_BYTES
            piece = view[at : at + room]
            self._block.update(piece)
            at += piece.nbytes
            if (self.bytes_written + at) % BLOCK_BYTES == 0:
                self._blocks.append(self._block.hexdigest())
                self._block = hashlib.sha256()

    @property
    def sha256(self) -> str:
        return self._hash.hexdigest()

    @property
    def block_sha256(self) -> tuple[str, ...]:
        """sha256 of each BLOCK_BYTES block, the last one short (empty without `blocks`)."""
        if self._blocks is None:
            return ()
        tail = (self._block.hexdigest(),) if self.bytes_written % BLOCK_BYTES else ()
        return (*self._blocks, *tail)


@contextlib.contextmanager
def open_write(uri: str, block_hashes: bool = False) -> Iterator[_HashingWriter]:
    """Write a file that appears under `uri` only if the block completes.

    The yielded writer exposes `bytes_written` and `sha256` (and `block_sha256` with
    `block_hashes`) after the block.
    """
    if is_gcs(uri):
        with tempfile.NamedTemporaryFile(prefix="recap-upload-", dir=_spool_dir()) as spool:
            writer = _HashingWriter(spool, block_hashes)
            yield writer
            spool.flush()
            upload(spool.name, uri)
        return
    path = _local_path(uri)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{TEMP_MARKER}{uuid.uuid4().hex}-{path.name}")
    try:
        with open(tmp, "wb") as handle:
            writer = _HashingWriter(handle, block_hashes)
            yield writer
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _spool_dir() -> str | None:
    return os.environ.get("RECAP_SPOOL_DIR") or None


def upload(local_path: str | os.PathLike[str], uri: str) -> None:
    """Publish a local file under `uri` (atomic on both backends)."""
    if is_gcs(uri):
        blob = _blob(uri)

        def send() -> None:
            with open(local_path, "rb") as handle:
                blob.upload_from_file(handle, rewind=True, retry=None, checksum="crc32c")

        _call(send, uri)
        return
    with open(local_path, "rb") as src, open_write(uri) as dst:
        shutil.copyfileobj(src, dst, READ_CHUNK_BYTES)


def write_bytes(uri: str, data: bytes) -> str:
    """Atomically write `data`; returns its sha256."""
    if is_gcs(uri):
        blob = _blob(uri)
        _call(lambda: blob.upload_from_string(data, retry=None, checksum="crc32c"), uri)
        return hashlib.sha256(data).hexdigest()
    with open_write(uri) as out:
        out.write(data)
    return out.sha256


def write_text(uri: str, text: str) -> str:
    return write_bytes(uri, text.encode("utf-8"))


def write_json(uri: str, value: Any) -> str:
    return write_text(uri, json.dumps(value, indent=2, sort_keys=True, default=str) + "\n")


# --------------------------------------------------------------------------- listing and the rest


def exists(uri: str) -> bool:
    if is_gcs(uri):
        blob = _blob(uri)
        return bool(_call(lambda: blob.exists(retry=None), uri))
    return _local_path(uri).exists()


def size(uri: str) -> int:
    if is_gcs(uri):
        blob = _blob(uri)
        _call(lambda: blob.reload(retry=None), uri)
        return int(blob.size or 0)
    return _local_path(uri).stat().st_size


def list_uris(prefix_uri: str) -> list[str]:
    """Every file below a directory-like prefix, sorted; temporary files are never listed."""
    if is_gcs(prefix_uri):
        bucket, key = split_gcs(prefix_uri.rstrip("/"))
        prefix = f"{key}/" if key else ""

        def fetch() -> list[str]:
            blobs = gcs_client().list_blobs(bucket, prefix=prefix, retry=None)
            return [f"{GCS_SCHEME}{bucket}/{b.name}" for b in blobs]

        found = _call(fetch, prefix_uri)
    else:
        root = _local_path(prefix_uri)
        if not root.is_dir():
            return []
        base = str(prefix_uri).rstrip("/")
        found = [
            join(base, str(path.relative_to(root)).replace(os.sep, "/"))
            for path in root.rglob("*")
            if path.is_file()
        ]
    return sorted(u for u in found if not basename(u).startswith(TEMP_MARKER))


def is_dir(uri: str) -> bool:
    """A local directory, or a gs:// prefix with at least one object below it."""
    if is_gcs(uri):
        bucket, key = split_gcs(uri.rstrip("/"))
        prefix = f"{key}/" if key else ""

        def probe() -> bool:
            return any(True for _ in gcs_client().list_blobs(bucket, prefix=prefix, max_results=1, retry=None))

        return bool(_call(probe, uri))
    return _local_path(uri).is_dir()


def delete(uri: str, missing_ok: bool = True) -> None:
    if is_gcs(uri):
        blob = _blob(uri)
        try:
            _call(lambda: blob.delete(retry=None), uri)
        except FileNotFoundError:
            if not missing_ok:
                raise
        return
    try:
        _local_path(uri).unlink()
    except FileNotFoundError:
        if not missing_ok:
            raise


def delete_prefix(prefix_uri: str) -> int:
    """Remove everything below a prefix (e.g. a partial output before a rerun); returns count."""
    if is_gcs(prefix_uri):
        uris = list_uris(prefix_uri)
        for uri in uris:
            delete(uri)
        return len(uris)
    root = _local_path(prefix_uri)
    if not root.exists():
        return 0
    count = sum(1 for p in root.rglob("*") if p.is_file())
    shutil.rmtree(root)
    return count


def copy(src: str, dst: str) -> None:
    """Copy one object; server-side within GCS, streamed otherwise."""
    if is_gcs(src) and is_gcs(dst):
        src_blob, dst_blob = _blob(src), _blob(dst)

        def rewrite() -> None:
            token, _, _ = dst_blob.rewrite(src_blob, retry=None)
            while token is not None:
                token, _, _ = dst_blob.rewrite(src_blob, token=token, retry=None)

        _call(rewrite, f"{src} -> {dst}")
        return
    if is_gcs(src):
        with tempfile.TemporaryDirectory(dir=_spool_dir()) as tmp:
            local = download(src, Path(tmp) / "object")
            upload(local, dst)
        return
    upload(_local_path(src), dst)


def copy_prefix(src_prefix: str, dst_prefix: str) -> list[str]:
    """Copy every file below `src_prefix` to the same relative path below `dst_prefix`."""
    copied = []
    for uri in list_uris(src_prefix):
        target = join(dst_prefix, relative_to(uri, src_prefix.rstrip("/")))
        copy(uri, target)
        copied.append(target)
    return copied

