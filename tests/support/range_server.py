"""A real HTTP/1.1 file server for tests and benchmarks: honours Range, counts what it sends.

``RangeServer(root)`` serves the files under ``root`` on ``127.0.0.1`` (an ephemeral port) from a
background thread, with keep-alive connections. It never lists folders (a folder URL answers 404,
like most object stores behind HTTP), redirects ``/dir`` to ``/dir/`` as common servers do, and
counts the body bytes and requests it serves so a test can assert a byte budget. It can be told
to misbehave, to test the client's error handling against a real socket:

- ``fail_next(n, status=500)``: the next ``n`` requests answer ``status`` (then it recovers);
- ``forbid(prefix)``: paths starting with ``prefix`` answer 403;
- ``ignore_range = True``: answer every GET with 200 and the whole file, like a server without
  Range support;
- ``delay = seconds``: sleep before answering (to trigger client timeouts);
- ``hide_total = True``: send ``Content-Range: bytes a-b/*`` (a size the client must ask for).
"""

from __future__ import annotations

import os
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

_RANGE = re.compile(r"bytes=(\d*)-(\d*)$")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out as separate writes
    server: _Server

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib signature
        pass

    def _status_only(self, status: int, extra: dict[str, str] | None = None) -> None:
        body = f"{status}\n".encode()
        self.send_response(status)
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _serve(self) -> None:
        srv = self.server.owner
        srv._count_request(self.command, self.headers.get("Range"))
        if srv.delay:
            time.sleep(srv.delay)
        status = srv._take_failure()
        if status:
            self._status_only(status)
            return
        path = unquote(urlsplit(self.path).path)
        if any(path.startswith(p) for p in srv.forbidden):
            self._status_only(403)
            return
        local = os.path.normpath(os.path.join(srv.root, path.lstrip("/")))
        if not local.startswith(srv.root):
            self._status_only(404)
            return
        if os.path.isdir(local):
            if not path.endswith("/"):
                self._status_only(301, {"Location": path + "/"})
            else:
                self._status_only(404)  # no listings, like an object store
            return
        if not os.path.isfile(local):
            self._status_only(404)
            return
        size = os.path.getsize(local)
        start, end, partial = 0, size, False
        rng = self.headers.get("Range")
        if rng and not srv.ignore_range:
            m = _RANGE.match(rng.strip())
            if m is None or (not m.group(1) and not m.group(2)):
                self._status_only(416, {"Content-Range": f"bytes */{size}"})
                return
            if m.group(1):
                start = int(m.group(1))
                end = min(size, int(m.group(2)) + 1) if m.group(2) else size
            else:
                start, end = max(0, size - int(m.group(2))), size
            if start >= size or end <= start:
                self._status_only(416, {"Content-Range": f"bytes */{size}"})
                return
            partial = True
        self.send_response(206 if partial else 200)
        self.send_header("Content-Length", str(end - start))
        self.send_header("Accept-Ranges", "none" if srv.ignore_range else "bytes")
        if partial:
            total = "*" if srv.hide_total else str(size)
            self.send_header("Content-Range", f"bytes {start}-{end - 1}/{total}")
        self.end_headers()
        if self.command == "HEAD":
            return
        fd = os.open(local, os.O_RDONLY)
        try:
            pos = start
            while pos < end:
                chunk = os.pread(fd, min(1 << 20, end - pos), pos)
                if not chunk:
                    break
                srv._count_bytes(len(chunk))  # counted before sending, so clients never race it
                try:
                    self.wfile.write(chunk)
                except (BrokenPipeError, ConnectionResetError):
                    break  # the client hung up (it refused a whole-file answer): fine
                pos += len(chunk)
        finally:
            os.close(fd)

    do_GET = _serve
    do_HEAD = _serve


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    owner: RangeServer


class RangeServer:
    """Serve ``root`` over HTTP on 127.0.0.1 until :meth:`stop` (also a context manager)."""

    def __init__(self, root: str) -> None:
        self.root = os.path.realpath(root)
        self.forbidden: list[str] = []
        self.ignore_range = False
        self.delay = 0.0
        self.hide_total = False  # answer Content-Range "bytes a-b/*" (size unknown)
        self.bytes_served = 0
        self.requests: list[tuple[str, str | None]] = []
        self._failures: list[int] = []
        self._lock = threading.Lock()
        self._httpd = _Server(("127.0.0.1", 0), _Handler)
        self._httpd.owner = self
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,),
                                        daemon=True)
        self._thread.start()

    def url(self, path: str = "") -> str:
        return f"http://127.0.0.1:{self.port}/{path.lstrip('/')}"

    def fail_next(self, n: int, status: int = 500) -> None:
        with self._lock:
            self._failures.extend([status] * n)

    def forbid(self, prefix: str) -> None:
        self.forbidden.append("/" + prefix.lstrip("/"))

    def reset_counts(self) -> None:
        with self._lock:
            self.bytes_served = 0
            self.requests = []

    def get_requests(self) -> int:
        return sum(1 for m, _ in self.requests if m == "GET")

    def _take_failure(self) -> int:
        with self._lock:
            return self._failures.pop(0) if self._failures else 0

    def _count_request(self, method: str, rng: str | None) -> None:
        with self._lock:
            self.requests.append((method, rng))

    def _count_bytes(self, n: int) -> None:
        with self._lock:
            self.bytes_served += n

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> RangeServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
