"""A loopback HTTP proxy that answers 503 or drops the connection on a share of requests.

It sits between the storage client and the GCS emulator to prove the retry policy: every
fault is either a 503 the emulator never saw, or a request the emulator executed whose
response is then lost (the hard case: the client must retry an operation that may have
happened). An outage, on top of that: every request fails with 503 for `outage_s` seconds from
the first request `outage_when(method, target)` picks (e.g. the first shard upload of a step),
long enough to outlast the client's retries. `on_request(method, target)` is called before each
request is answered (e.g. to kill a step's process in the middle of its first shard upload).
`target` is the request's path and query and, for uploads, the start of the body (a multipart
upload names its object there).
"""

from __future__ import annotations

import http.client
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "proxy-connection", "upgrade"}


class FaultyProxy:
    def __init__(self, upstream: str, fault_rate: float, seed: int = 0, drop_share: float = 0.5,
                 outage_s: float = 0.0, outage_when: Callable[[str, str], bool] | None = None,
                 on_request: Callable[[str, str], None] | None = None) -> None:
        self.upstream = urlsplit(upstream)
        self.outage_s, self.outage_when = outage_s, outage_when
        self.outage_started: float | None = None
        self.on_request = on_request
        self.fault_rate = fault_rate
        self.drop_share = drop_share
        self.random = random.Random(seed)
        self.lock = threading.Lock()
        self.counts: Counter[str] = Counter()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                target = self.path + body[:2048].decode("latin-1")
                if proxy.on_request is not None:
                    proxy.on_request(self.command, target)
                fault = proxy.draw_fault(self.command, target)
                if fault == "503":
                    payload = b'{"error": {"code": 503, "message": "injected"}}'
                    self.send_response(503)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                upstream = http.client.HTTPConnection(proxy.upstream.hostname, proxy.upstream.port, timeout=60)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
                headers["Host"] = proxy.upstream.netloc
                upstream.request(self.command, self.path, body=body or None, headers=headers)
                response = upstream.getresponse()
                data = response.read()
                upstream.close()
                if fault == "drop":
                    # The upstream executed the request; the client never hears about it.
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                self.send_response(response.status)
                for key, value in response.getheaders():
                    if key.lower() not in HOP_BY_HOP and key.lower() != "content-length":
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def draw_fault(self, method: str = "GET", path: str = "") -> str:
        with self.lock:
            now = time.monotonic()
            if self.outage_started is None and self.outage_when is not None and self.outage_when(method, path):
                self.outage_started = now
            if self.outage_started is not None and now - self.outage_started < self.outage_s:
                self.counts["outage"] += 1
                return "503"
            roll = self.random.random()
            fault = "ok"
            if roll < self.fault_rate * (1 - self.drop_share):
                fault = "503"
            elif roll < self.fault_rate:
                fault = "drop"
            self.counts[fault] += 1
            return fault

    def __enter__(self) -> FaultyProxy:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
