"""Storage API: the same bodies against local paths and the GCS emulator, plus fault injection."""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path

import pytest
from google.api_core import exceptions as gexc

from components.common import storage
from components.common.errors import StorageError
from tests.common.faulty_proxy import FaultyProxy


def test_bytes_text_json_round_trip(storage_root: str) -> None:
    storage.write_bytes(storage.join(storage_root, "a.bin"), b"\x00\x01")
    storage.write_text(storage.join(storage_root, "dir/b.txt"), "héllo")
    storage.write_json(storage.join(storage_root, "dir/c.json"), {"x": [1, 2]})
    assert storage.read_bytes(storage.join(storage_root, "a.bin")) == b"\x00\x01"
    assert storage.read_text(storage.join(storage_root, "dir/b.txt")) == "héllo"
    assert storage.read_json(storage.join(storage_root, "dir/c.json")) == {"x": [1, 2]}


def test_streaming_write_reports_size_and_hash_and_reads_back_in_pieces(storage_root: str) -> None:
    uri = storage.join(storage_root, "stream.bin")
    chunks = [os.urandom(100_000) for _ in range(5)]
    with storage.open_write(uri) as out:
        for chunk in chunks:
            out.write(chunk)
    data = b"".join(chunks)
    assert out.bytes_written == len(data)
    assert out.sha256 == hashlib.sha256(data).hexdigest()
    assert storage.size(uri) == len(data)
    with storage.open_read(uri) as handle:
        assert handle.read(10) == data[:10]
        handle.seek(250_000)
        assert handle.read(1000) == data[250_000:251_000]
        handle.seek(0)
        assert handle.read() == data


def test_failed_write_publishes_nothing(storage_root: str) -> None:
    uri = storage.join(storage_root, "never.bin")
    with pytest.raises(RuntimeError), storage.open_write(uri) as out:
        out.write(b"half of it")
        raise RuntimeError("writer crashed")
    assert not storage.exists(uri)
    assert storage.list_uris(storage_root) == []


def test_list_exists_delete(storage_root: str) -> None:
    names = ["x/part-0.parquet", "x/part-1.parquet", "x/notes.txt", "x/sub/part-2.parquet", "y/z.bin"]
    for name in names:
        storage.write_bytes(storage.join(storage_root, name), name.encode())
    assert storage.list_uris(storage.join(storage_root, "x")) == sorted(
        storage.join(storage_root, n) for n in names if n.startswith("x/")
    )
    assert storage.exists(storage.join(storage_root, "y/z.bin"))
    assert storage.is_dir(storage.join(storage_root, "x"))
    assert not storage.exists(storage.join(storage_root, "y/nope"))
    assert not storage.is_dir(storage.join(storage_root, "nope"))
    storage.delete(storage.join(storage_root, "y/z.bin"))
    assert not storage.exists(storage.join(storage_root, "y/z.bin"))
    storage.delete(storage.join(storage_root, "y/z.bin"))  # missing_ok
    with pytest.raises(FileNotFoundError):
        storage.delete(storage.join(storage_root, "y/z.bin"), missing_ok=False)
    assert storage.delete_prefix(storage.join(storage_root, "x")) == 4
    assert storage.list_uris(storage.join(storage_root, "x")) == []


def test_copy_and_copy_prefix(storage_root: str, tmp_path) -> None:
    src = storage.join(storage_root, "src")
    for i in range(3):
        storage.write_text(storage.join(src, f"d/{i}.txt"), str(i))
    copied = storage.copy_prefix(src, storage.join(storage_root, "dst"))
    assert [storage.read_text(u) for u in copied] == ["0", "1", "2"]
    # across backends: to a local directory and back
    local = str(tmp_path / "local.txt")
    storage.copy(storage.join(src, "d/1.txt"), local)
    assert Path(local).read_text() == "1"
    storage.copy(local, storage.join(storage_root, "back.txt"))
    assert storage.read_text(storage.join(storage_root, "back.txt")) == "1"


def test_missing_object_is_file_not_found(storage_root: str) -> None:
    with pytest.raises(FileNotFoundError):
        storage.read_bytes(storage.join(storage_root, "missing"))


def test_download_to_local_cache(storage_root: str, tmp_path) -> None:
    uri = storage.join(storage_root, "shard.bin")
    storage.write_bytes(uri, b"abc" * 1000)
    local = storage.download(uri, tmp_path / "cache" / "shard.bin")
    assert local.read_bytes() == b"abc" * 1000
    assert [p.name for p in (tmp_path / "cache").iterdir()] == ["shard.bin"]


def test_join_parent_basename() -> None:
    assert storage.join("gs://b", "x/", "/y") == "gs://b/x/y"
    assert storage.parent("gs://b/x/y") == "gs://b/x"
    assert storage.parent("gs://b/x") == "gs://b"
    assert storage.basename("gs://b/x/y/") == "y"
    assert storage.relative_to("gs://b/x/y/z", "gs://b/x") == "y/z"
    with pytest.raises(StorageError):
        storage.split_gcs("gs:///key")


class TestRetryPolicy:
    def policy(self) -> storage.RetryPolicy:
        return storage.RetryPolicy(attempts=4, base_s=0.001, cap_s=0.002)

    def test_retries_transient_errors_then_succeeds(self) -> None:
        errors = [gexc.ServiceUnavailable("x"), gexc.TooManyRequests("x"), ConnectionResetError()]
        calls = []

        def flaky() -> str:
            calls.append(1)
            if errors:
                raise errors.pop(0)
            return "ok"

        assert self.policy().call(flaky, "op") == "ok"
        assert len(calls) == 4

    def test_does_not_retry_client_errors(self) -> None:
        calls = []

        def forbidden() -> None:
            calls.append(1)
            raise gexc.Forbidden("no")

        with pytest.raises(gexc.Forbidden):
            self.policy().call(forbidden, "op")
        assert len(calls) == 1

    def test_gives_up_after_the_attempt_budget(self) -> None:
        calls = []

        def down() -> None:
            calls.append(1)
            raise gexc.InternalServerError("boom")

        with pytest.raises(gexc.InternalServerError):
            self.policy().call(down, "op")
        assert len(calls) == 4


@pytest.mark.integration
def test_emulator_round_trips_a_50mb_object(gcs_bucket: str) -> None:
    uri = f"{gcs_bucket}/big/object.bin"
    data = os.urandom(1024 * 1024) * 50
    with storage.open_write(uri) as out:
        for start in range(0, len(data), 4 * 1024 * 1024):
            out.write(data[start : start + 4 * 1024 * 1024])
    assert storage.size(uri) == len(data)
    digest = hashlib.sha256()
    with storage.open_read(uri) as handle:
        while chunk := handle.read(3 * 1024 * 1024):
            digest.update(chunk)
    assert digest.hexdigest() == hashlib.sha256(data).hexdigest()


@pytest.mark.integration
def test_emulator_round_trips_a_1000_object_prefix(gcs_bucket: str) -> None:
    prefix = f"{gcs_bucket}/many"
    for i in range(1000):
        storage.write_bytes(f"{prefix}/obj-{i:04d}", str(i).encode())
    listed = storage.list_uris(prefix)
    assert listed == [f"{prefix}/obj-{i:04d}" for i in range(1000)]
    assert storage.read_text(listed[777]) == "777"
    assert storage.delete_prefix(prefix) == 1000
    assert storage.list_uris(prefix) == []


def _direct_client(emulator_url: str):
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage as gcs

    return gcs.Client(project="check", credentials=AnonymousCredentials(),
                      client_options={"api_endpoint": emulator_url})


@pytest.mark.integration
def test_faults_503_and_dropped_connections_are_retried_and_never_expose_partial_objects(
    gcs_emulator: str, gcs_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    bucket = gcs_bucket[len("gs://") :]
    expected = {f"f/obj-{i:02d}": os.urandom(3_000 + i * 50_000) for i in range(12)}
    expected["f/large"] = os.urandom(9 * 1024 * 1024)  # above the resumable-upload threshold
    violations: list[str] = []
    stop = threading.Event()

    def watch() -> None:
        """Anything visible under a final name must be the whole, final content."""
        direct = _direct_client(gcs_emulator).bucket(bucket)
        while not stop.is_set():
            for blob in direct.client.list_blobs(bucket, prefix="f/"):
                content = direct.blob(blob.name).download_as_bytes()
                if content != expected.get(blob.name):
                    violations.append(f"{blob.name}: {len(content)} bytes visible")

    watcher = threading.Thread(target=watch, daemon=True)
    with FaultyProxy(gcs_emulator, fault_rate=0.3, seed=7) as proxy:
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", proxy.url)
        monkeypatch.setattr(storage, "RETRY", storage.RetryPolicy(attempts=15, base_s=0.01, cap_s=0.1))
        storage._clients.clear()
        watcher.start()
        try:
            for name, data in expected.items():
                with storage.open_write(f"{gcs_bucket}/{name}") as out:
                    out.write(data)
            listed = storage.list_uris(f"{gcs_bucket}/f")
            downloaded = {storage.relative_to(u, gcs_bucket): storage.read_bytes(u) for u in listed}
            streamed = storage.open_read(f"{gcs_bucket}/f/large").read()
        finally:
            stop.set()
            watcher.join(timeout=30)
            storage._clients.clear()
    assert downloaded == expected
    assert streamed == expected["f/large"]
    assert proxy.counts["503"] > 3 and proxy.counts["drop"] > 3, proxy.counts
    assert violations == []


@pytest.mark.integration
def test_exhausted_retries_raise_storage_error_and_leave_nothing(
    gcs_emulator: str, gcs_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with FaultyProxy(gcs_emulator, fault_rate=1.0, seed=1, drop_share=0.0) as proxy:
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", proxy.url)
        monkeypatch.setattr(storage, "RETRY", storage.RetryPolicy(attempts=3, base_s=0.001, cap_s=0.002))
        storage._clients.clear()
        try:
            with pytest.raises(StorageError, match=r"gs://.*/doomed.*gave up after 3 attempts"):
                storage.write_bytes(f"{gcs_bucket}/doomed", b"data")
        finally:
            storage._clients.clear()
    assert proxy.counts["ok"] == 0 and proxy.counts["503"] >= 3
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs_emulator)
    assert not storage.exists(f"{gcs_bucket}/doomed")


def test_proxy_and_ca_settings_are_read_once_from_the_environment(gcs_bucket: str, monkeypatch) -> None:
    """requests would scan the environment on every call; the client's session takes the same settings
    once: a proxy for the endpoint is kept, an endpoint under NO_PROXY goes direct."""
    try:
        monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")  # nothing listens there
        monkeypatch.setenv("NO_PROXY", "example.invalid")
        storage._clients.clear()
        session = storage.gcs_client()._http
        assert session.trust_env is False and session.proxies.get("http") == "http://127.0.0.1:9"
        monkeypatch.setenv("NO_PROXY", "127.0.0.1")
        storage._clients.clear()
        session = storage.gcs_client()._http
        assert session.trust_env is False and "http" not in session.proxies
        storage.write_bytes(f"{gcs_bucket}/direct", b"through no proxy")
        buffer = bytearray(7)
        assert storage.read_range_into(f"{gcs_bucket}/direct", 8, buffer) == 7 and bytes(buffer) == b"no prox"
    finally:
        storage._clients.clear()
