"""A small HTTP(S) client for ranged reads, built on :mod:`http.client` only.

Why not fsspec's HTTP filesystem: its ``cat_file(start, end)`` reads the whole response body
before looking at the status, so a server that ignores ``Range`` would make it download a 4 GB
shard to return 8 bytes. Here the status is checked first: a ``200`` answer to a ranged request is
accepted only when its body is small (``small_body``), otherwise the connection is dropped unread
and a :class:`RemoteError` says so. 5xx/429 answers, timeouts and dropped connections are retried
a bounded number of times with exponential backoff; 401/403/404/416 are clear errors at once.
Redirects are followed, at most 5 in a row, and only on the same scheme and host unless
``allow_redirect_host`` is set (the Hugging Face hub answers with 302 to a CDN).
Budgets: ``timeout`` is the wall-clock limit of one read *including* its retries and however
slowly the server drips its answer (bodies are read in chunks against that deadline), and a body
is never read past the length the request asked for. Connections are kept alive, one per thread
and host.
"""

from __future__ import annotations

import http.client
import re
import threading
import time
from urllib.parse import urljoin, urlsplit, urlunsplit

from ckpt_audit.errors import RemoteError
from ckpt_audit.storage.options import RemoteOptions

_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")
_USER_AGENT = "ckpt-audit (ranged reads)"


class HttpClient:
    """Ranged GET and HEAD with retries, keep-alive connections per thread and host."""

    def __init__(self, options: RemoteOptions) -> None:
        self.options = options
        self._local = threading.local()
        self._total_deadline = time.monotonic() + options.total_timeout
        self._fetched = 0
        self._lock = threading.Lock()

    def _spend(self, n: int, url: str) -> None:
        """Count body bytes against the tree's byte budget."""
        with self._lock:
            self._fetched += n
            over = self._fetched > self.options.max_bytes
        if over:
            raise RemoteError(f"over the {self.options.max_bytes}-byte budget for the remote "
                              "reads of one audit", url)

    # -- connections -------------------------------------------------------------------------
    def _conn(self, scheme: str, netloc: str) -> http.client.HTTPConnection:
        pool: dict[tuple[str, str], http.client.HTTPConnection] = getattr(
            self._local, "pool", None
        ) or {}
        self._local.pool = pool
        conn = pool.get((scheme, netloc))
        if conn is None:
            cls = http.client.HTTPSConnection if scheme == "https" else http.client.HTTPConnection
            conn = cls(netloc, timeout=self.options.timeout)
            pool[(scheme, netloc)] = conn
        return conn

    def _drop(self, scheme: str, netloc: str) -> None:
        pool = getattr(self._local, "pool", {})
        conn = pool.pop((scheme, netloc), None)
        if conn is not None:
            conn.close()

    def _remaining(self, url: str) -> float:
        now = time.monotonic()
        if now >= self._total_deadline:
            raise RemoteError(f"the {self.options.total_timeout:g} s budget for the remote reads "
                              "of one audit is spent (--timeout)", url)
        deadline = getattr(self._local, "deadline", None)
        left = self.options.timeout if deadline is None else deadline - now
        if left <= 0:
            raise TimeoutError
        return min(left, self._total_deadline - now)

    def _send(
        self, method: str, url: str, headers: dict[str, str]
    ) -> tuple[http.client.HTTPResponse, str]:
        """One request, following redirects; returns the response (body unread) and final URL."""
        first = urlsplit(url)
        for _ in range(6):
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https"):
                raise RemoteError(f"unsupported redirect to {parts.scheme}://", url)
            if (parts.scheme, parts.netloc) != (first.scheme, first.netloc) \
                    and not self.options.allow_redirect_host:
                raise RemoteError(
                    f"redirected to another host ({parts.scheme}://{parts.netloc}); refused "
                    "(--allow-redirect-host follows it)", urlunsplit(first))
            conn = self._conn(parts.scheme, parts.netloc)
            conn.timeout = self._remaining(url)
            if conn.sock is not None:
                conn.sock.settimeout(conn.timeout)
            target = parts.path or "/"
            if parts.query:
                target += "?" + parts.query
            try:
                conn.request(method, target, headers={"User-Agent": _USER_AGENT, **headers})
                resp = conn.getresponse()
            except (OSError, http.client.HTTPException):
                self._drop(parts.scheme, parts.netloc)
                raise
            if resp.status in (301, 302, 303, 307, 308) and resp.getheader("Location"):
                self._drop(parts.scheme, parts.netloc)  # its body is never read
                url = urljoin(url, resp.getheader("Location", ""))
                continue
            return resp, url
        raise RemoteError("too many redirects", url)

    def _body(self, resp: http.client.HTTPResponse, limit: int, url: str) -> bytes:
        """At most ``limit`` bytes of the body, read in chunks against the read's deadline (a
        server dripping one byte at a time cannot stretch a read past ``timeout``). A body
        longer than that is never read: its connection is dropped."""
        chunks: list[bytes] = []
        got = 0
        while got < limit:
            self._remaining(url)
            chunk = resp.read1(min(limit - got, 1 << 20))
            if not chunk:
                break
            self._spend(len(chunk), url)
            chunks.append(chunk)
            got += len(chunk)
        if resp.length == 0 or resp.isclosed():
            resp.read()  # nothing left: marks the response done so the connection is reused
        else:
            parts = urlsplit(url)
            self._drop(parts.scheme, parts.netloc)
        return b"".join(chunks)

    def _with_retries(self, url: str, what: str, attempt_fn):  # type: ignore[no-untyped-def]
        """Run ``attempt_fn()``; retry on transient failures (it returns None to ask for one)."""
        opts = self.options
        last = ""
        deadline = time.monotonic() + opts.timeout
        self._local.deadline = deadline
        attempts = 0
        try:
            for attempt in range(opts.retries + 1):
                if attempt:
                    pause = opts.backoff * (2 ** (attempt - 1))
                    if time.monotonic() + pause >= deadline:
                        break
                    time.sleep(pause)
                attempts += 1
                try:
                    result = attempt_fn()
                except TimeoutError:
                    last = f"timed out: no answer within the {opts.timeout:g} s budget of one read"
                    parts = urlsplit(url)
                    self._drop(parts.scheme, parts.netloc)
                    if time.monotonic() >= deadline:
                        break
                    continue
                except (OSError, http.client.HTTPException) as exc:
                    last = f"connection failed ({exc.__class__.__name__}: {exc})"
                    continue
                if isinstance(result, str):
                    last = result
                    continue
                return result
        finally:
            self._local.deadline = None
        plural = "" if attempts == 1 else "s"
        raise RemoteError(f"{what} failed after {attempts} attempt{plural}: {last}", url)

    # -- requests ----------------------------------------------------------------------------
    def head(self, url: str) -> tuple[bool, int | None, str]:
        """``(exists, size, final URL after redirects)``; 404/410 is ``(False, None, url)``,
        401/403 a :class:`RemoteError`."""

        def attempt():  # type: ignore[no-untyped-def]
            parts = urlsplit(url)
            resp, final = self._send("HEAD", url, {})
            self._body(resp, 4096, final)
            status = resp.status
            if resp.getheader("Connection", "").lower() == "close":
                self._drop(parts.scheme, parts.netloc)
            if status in (404, 410):
                return (False, None, final)
            if status in (401, 403):
                raise RemoteError(f"access denied (HTTP {status})", url)
            if status >= 500 or status == 429:
                return f"HTTP {status}"
            if status in (405, 501):  # HEAD not allowed: ask for one byte instead
                return ("get", None, final)
            if 200 <= status < 300:
                length = resp.getheader("Content-Length")
                return (True, int(length) if length and length.isdigit() else None, final)
            raise RemoteError(f"unexpected HTTP {status} to HEAD", url)

        result = self._with_retries(url, "HEAD", attempt)
        if result[0] == "get":
            try:
                _, total, _ = self.get_range(url, 0, 1)
            except RemoteError as exc:
                if "not found" in exc.message:
                    return (False, None, url)
                raise
            return (True, total, url)
        return result  # type: ignore[no-any-return]

    def get_range(self, url: str, start: int, end: int) -> tuple[bytes, int | None, int]:
        """Bytes ``[start, end)``, the file's total size (from Content-Range) if known, and the
        number of body bytes that came over the wire (more than asked only for a small 200).

        The answer may be shorter than asked when the file ends first (the caller checks).
        """
        if end <= start:
            return b"", None, 0

        def attempt():  # type: ignore[no-untyped-def]
            parts = urlsplit(url)
            resp, final = self._send("GET", url, {"Range": f"bytes={start}-{end - 1}"})
            status = resp.status
            if status == 206:
                m = _CONTENT_RANGE.match(resp.getheader("Content-Range", ""))
                if m is None or int(m.group(1)) != start or int(m.group(2)) >= end:
                    self._drop(parts.scheme, parts.netloc)
                    raise RemoteError(
                        f"server answered range {resp.getheader('Content-Range')!r} "
                        f"to a request for bytes {start}-{end - 1}", url)
                body = self._body(resp, int(m.group(2)) - start + 1, final)
                if len(body) != int(m.group(2)) - start + 1:
                    self._drop(parts.scheme, parts.netloc)
                    return f"short body ({len(body)} bytes)"
                total = None if m.group(3) == "*" else int(m.group(3))
                return (body, total, len(body))
            if status == 200:
                length = resp.getheader("Content-Length")
                size = int(length) if length and length.isdigit() else None
                if size is None or size > self.options.small_body:
                    self._drop(parts.scheme, parts.netloc)  # never read a whole shard
                    what = f"the whole {size}-byte file" if size is not None else "the whole file"
                    raise RemoteError(
                        f"server ignored the Range header (HTTP 200 with {what}); ckpt-audit "
                        "reads byte ranges only and will not download whole files", url)
                body = self._body(resp, size, final)
                if len(body) != size:
                    self._drop(parts.scheme, parts.netloc)
                    return f"short body ({len(body)} of {size} bytes)"
                return (body[start:end], len(body), len(body))
            body = self._body(resp, 4096, final)
            self._drop(parts.scheme, parts.netloc)
            if status == 416:
                raise RemoteError(
                    f"range {start}-{end - 1} is outside the file (HTTP 416): truncated?", url)
            if status in (401, 403):
                raise RemoteError(f"access denied (HTTP {status})", url)
            if status in (404, 410):
                raise RemoteError(f"not found (HTTP {status})", url)
            if status >= 500 or status == 429:
                return f"HTTP {status}"
            raise RemoteError(f"unexpected HTTP {status} ({body[:80]!r})", final)

        return self._with_retries(url, f"GET bytes {start}-{end - 1}", attempt)  # type: ignore[no-any-return]
