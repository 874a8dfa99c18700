"""Ranged GETs of GCS objects straight into a caller's buffer, for the reader's gs:// hot path.

The frame reader streams packed shards from gs:// in 16 MiB ranges on 4 threads
(components.records.remote). Through google-cloud-storage's requests session, receiving those
bytes cost 0.35-0.9 ms of CPU per MB on this machine: urllib3's buffering, a poll before every
`recv` of a socket with a timeout, and requests' work per call. A plain `http.client`
connection per thread, kept alive, with a 4 MB receive buffer, receives the same ranges for
0.11-0.25 ms per MB, which is most of the difference between reading a shard from gs:// and
from a local disk.

It is used only where it can do exactly what the session does: the client's endpoint over
http or https, credentials applied with google-auth's own `before_request` (which refreshes
them), the CA bundle requests would use (REQUESTS_CA_BUNDLE, CURL_CA_BUNDLE, else certifi's).
With a proxy configured for the endpoint or client certificates (mTLS) in play, `usable` is
False and storage.read_range_into keeps the session. Errors are the ones the session raises
(google.api_core exceptions by status, ConnectionError for a dropped connection), so the same
retry policy applies.
"""

from __future__ import annotations

import http.client
import os
import socket
import ssl
import threading
from typing import Any
from urllib.parse import quote, urlsplit

RECEIVE_BUFFER_BYTES = 4 * 1024 * 1024
TIMEOUT_S = 300.0


class _Connection(http.client.HTTPConnection):
    def connect(self) -> None:
        super().connect()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER_BYTES)


class _TlsConnection(http.client.HTTPSConnection):
    def connect(self) -> None:
        super().connect()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER_BYTES)


def usable(client: Any) -> bool:
    """Whether `RangeReader` can stand in for the client's session (no proxy, no mTLS, http(s))."""
    import requests

    endpoint = client.api_endpoint
    if urlsplit(endpoint).scheme not in ("http", "https"):
        return False
    if os.environ.get("GOOGLE_API_USE_CLIENT_CERTIFICATE", "").lower() == "true":
        return False
    return not requests.utils.get_environ_proxies(endpoint)


class RangeReader:
    """One kept-alive connection per thread to the client's endpoint."""

    def __init__(self, client: Any) -> None:
        import google.auth.transport.requests

        self.endpoint = urlsplit(client.api_endpoint)
        self.credentials = client._credentials
        self.auth_request = google.auth.transport.requests.Request()
        self.lock = threading.Lock()  # google-auth credentials are not thread-safe while refreshing
        self.local = threading.local()
        self.context = None
        if self.endpoint.scheme == "https":
            import certifi

            bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or certifi.where()
            self.context = ssl.create_default_context(cafile=bundle)

    def _connection(self) -> http.client.HTTPConnection:
        connection = getattr(self.local, "connection", None)
        if connection is None:
            host, port = self.endpoint.hostname, self.endpoint.port
            if self.context is not None:
                connection = _TlsConnection(host, port, timeout=TIMEOUT_S, context=self.context)
            else:
                connection = _Connection(host, port, timeout=TIMEOUT_S)
            self.local.connection = connection
        return connection

    def _drop(self) -> None:
        connection = getattr(self.local, "connection", None)
        if connection is not None:
            connection.close()
            self.local.connection = None

    def read_into(self, bucket: str, key: str, start: int, view: memoryview) -> int:
        """The object's bytes from `start` into `view`; how many (fewer at its end, 0 past it)."""
        from google.api_core import exceptions as gexc

        base = self.endpoint.path.rstrip("/")
        path = f"{base}/download/storage/v1/b/{quote(bucket, safe='')}/o/{quote(key, safe='')}?alt=media"
        headers = {"Range": f"bytes={start}-{start + len(view) - 1}", "Accept-Encoding": "identity"}
        with self.lock:
            self.credentials.before_request(self.auth_request, "GET", self.endpoint.geturl() + path, headers)
        connection = self._connection()
        try:
            connection.request("GET", path, headers=headers)
            response = connection.getresponse()
            if response.status == 416:  # the range starts at or past the end
                response.read()
                return 0
            if response.status not in (200, 206):
                body = response.read()
                raise gexc.from_http_status(response.status, f"GET {path}: {body[:500]!r}")
            if response.status == 200 and start:
                self._drop()
                raise gexc.from_http_status(500, f"GET {path}: the server ignored the byte range")
            got = 0
            while got < len(view):
                n = response.readinto(view[got:])
                if not n:
                    break
                got += n
            if not response.isclosed():  # more body than asked for (a 200 with the whole object)
                self._drop()
            return got
        except (OSError, http.client.HTTPException) as exc:
            self._drop()
            raise ConnectionError(f"GET {path}: {exc!r}") from exc
