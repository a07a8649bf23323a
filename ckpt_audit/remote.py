"""Checkpoints behind URLs: ``http(s)://``, ``s3://``, ``gs://``, ``hf://``, read by byte ranges.

:func:`remote_location` (called by :func:`ckpt_audit.io.location` for any URL) returns a
:class:`~ckpt_audit.io.Location`, so every reader works remotely unchanged. What goes over the
wire, by design (see docs/REMOTE.md):

- the first read near the start of a file fetches one block of ``head_block`` bytes (64 KiB) and
  serves the 8-byte length and the header from it; a larger header costs one more request for the
  missing part only (the *head cache*, the only cache there is);
- every other read fetches exactly its range; :meth:`RangedSource.read_ranges` merges ranges
  closer than ``merge_gap`` and runs the requests in a thread pool;
- no read-ahead: fsspec's block cache is bypassed by calling ``cat_file(path, start, end)``.

HTTP goes through :mod:`ckpt_audit.remote_http` (status checked before any body is read);
``s3://``, ``gs://`` and ``hf://`` go through fsspec with the backend package the scheme needs
(s3fs, gcsfs, huggingface_hub), with a clear error saying what to install when it is missing.
Every fetched byte is counted in ``Location.bytes_read``.
"""

from __future__ import annotations

import json
import posixpath
import threading
from abc import abstractmethod
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from ckpt_audit.errors import FormatError, RemoteError
from ckpt_audit.io import ByteSource, Location, _Counter
from ckpt_audit.remote_http import HttpClient, RemoteOptions

__all__ = ["RemoteOptions", "RangedSource", "remote_location", "merge_ranges", "WELL_KNOWN"]

#: Names a folder URL is probed for when the backend cannot list (plain HTTP).
WELL_KNOWN = (
    "model.safetensors.index.json",
    "model.safetensors",
    "config.json",
    "pytorch_model.bin.index.json",
    "pytorch_model.bin",
    "latest_checkpointed_iteration.txt",
    "latest",
    "metadata.json",
    ".metadata",
    "model.gguf",
    "model.bin",
)

def merge_ranges(
    ranges: Sequence[tuple[int, int]], gap: int
) -> list[tuple[int, int, list[int]]]:
    """Group ``(offset, length)`` ranges into ``(start, end, [indices])`` spans to fetch.

    Ranges that overlap or lie within ``gap`` bytes of each other share one span, so two norms
    stored side by side cost one request, while ranges far apart never drag the bytes between them.
    """
    order = sorted(range(len(ranges)), key=lambda i: ranges[i][0])
    spans: list[tuple[int, int, list[int]]] = []
    for i in order:
        off, n = ranges[i]
        if spans and off <= spans[-1][1] + gap:
            s, e, idx = spans[-1]
            spans[-1] = (s, max(e, off + n), idx + [i])
        else:
            spans.append((off, off + n, [i]))
    return spans


class _Head:
    """The first bytes of one remote file, its size once known, and a lock guarding them."""

    def __init__(self) -> None:
        self.data = b""  # bytes [0, len(data)) of the file
        self.done = False  # True once a fetch of the head reached the end of the file
        self.size: int | None = None
        self.lock = threading.Lock()


class _Shared:
    """What a remote location tree shares: counter, options, worker pool, small caches."""

    def __init__(self, options: RemoteOptions) -> None:
        self.options = options
        self.counter = _Counter()
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()
        self.exists_cache: dict[str, tuple[bool, int | None, str]] = {}
        #: whole small files (index, config) already fetched, so readers re-reading them cost 0
        self.small_files: dict[str, bytes] = {}
        self._heads: dict[str, _Head] = {}

    def head(self, url: str) -> _Head:
        """The head cache of one file, shared by every source opened on it (detection opens a
        file several times: the first block is fetched once)."""
        with self._lock:
            if url not in self._heads:
                self._heads[url] = _Head()
            return self._heads[url]

    def pool(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(
                    self.options.max_workers, thread_name_prefix="ckpt-audit-remote"
                )
            return self._pool


class RangedSource(ByteSource):
    """A remote file read by ranges: a head cache for headers, merged parallel range requests.

    Subclasses implement :meth:`_fetch` (one ranged request) and :meth:`_remote_size`.
    """

    def __init__(self, name: str, shared: _Shared, size: int | None = None) -> None:
        self.name = name
        self._shared = shared
        self._h = shared.head(name)
        if size is not None and self._h.size is None:
            self._h.size = size

    @abstractmethod
    def _fetch(self, start: int, end: int) -> tuple[bytes, int | None]:
        """Bytes ``[start, end)`` (shorter only at end of file) and the total size if learnt."""

    @abstractmethod
    def _remote_size(self) -> int:
        """The file size, asked of the server."""

    def _get(self, start: int, end: int) -> bytes:
        data, total = self._fetch(start, end)
        self._shared.counter.add(len(data))
        if total is not None:
            self._h.size = total
        return data

    def size(self) -> int:
        if self._h.size is None:
            with self._h.lock:
                if self._h.size is None:
                    self._grow_head(self._shared.options.head_block)
            if self._h.size is None:
                self._h.size = self._remote_size()
        return self._h.size

    def _grow_head(self, end: int) -> None:
        """Extend the head cache to cover ``[0, end)`` (or the whole file), fetching only the
        missing part. Called with the lock held."""
        have = len(self._h.data)
        if have >= end or self._h.done:
            return
        want = max(end, self._shared.options.head_block) if not have else end
        data = self._get(have, want)
        self._h.data += data
        size = self._h.size
        if len(data) < want - have or (size is not None and len(self._h.data) >= size):
            self._h.done = True

    def _check(self, offset: int, length: int) -> None:
        if offset < 0 or length < 0:
            raise FormatError(f"bad range offset={offset} length={length}", self.name)
        size = self._h.size
        if size is not None and offset + length > size:
            raise FormatError(
                f"range [{offset}, {offset + length}) is outside the file ({size} bytes)",
                self.name,
            )

    def _from_head(self, offset: int, length: int) -> bytes | None:
        """Serve from the head cache when the range starts inside the head block."""
        block = self._shared.options.head_block
        with self._h.lock:
            if offset > (len(self._h.data) if self._h.data else block):
                return None
            if offset + length > len(self._h.data):
                self._grow_head(offset + length)
            if offset + length > len(self._h.data):
                raise FormatError(
                    f"range [{offset}, {offset + length}) is outside the file "
                    f"({len(self._h.data)} bytes)", self.name)
            return self._h.data[offset : offset + length]

    def read(self, offset: int, length: int) -> bytes:
        self._check(offset, length)
        if length == 0:
            return b""
        data = self._from_head(offset, length)
        if data is None:
            data = self._get(offset, offset + length)
            if len(data) != length:
                raise FormatError(f"short read at offset {offset} (file truncated?)", self.name)
        self._check(offset, length)
        return data

    def read_ranges(self, ranges: Sequence[tuple[int, int]]) -> list[bytes]:
        """Merge nearby ranges, fetch the spans in parallel, cut each range back out."""
        for off, n in ranges:
            self._check(off, n)
        out: list[bytes | None] = [None] * len(ranges)
        rest: list[int] = []
        for i, (off, n) in enumerate(ranges):
            if n == 0:
                out[i] = b""
            elif self._h.data and off + n <= len(self._h.data):
                out[i] = self._h.data[off : off + n]
            else:
                rest.append(i)
        spans = merge_ranges([ranges[i] for i in rest], self._shared.options.merge_gap)

        def fetch(span: tuple[int, int, list[int]]) -> None:
            start, end, members = span
            data = self._get(start, end)
            if len(data) != end - start:
                raise FormatError(f"short read at offset {start} (file truncated?)", self.name)
            for j in members:
                off, n = ranges[rest[j]]
                out[rest[j]] = data[off - start : off - start + n]

        if len(spans) == 1:
            fetch(spans[0])
        elif spans:
            for fut in [self._shared.pool().submit(fetch, s) for s in spans]:
                fut.result()
        return [b if b is not None else b"" for b in out]


def _cached_small(shared: _Shared, key: str, fetch: Callable[[], bytes]) -> bytes:
    if key not in shared.small_files:
        shared.small_files[key] = fetch()
    return shared.small_files[key]


# -- HTTP ------------------------------------------------------------------------------------
class HttpSource(RangedSource):
    def __init__(self, url: str, shared: _Shared, client: HttpClient, size: int | None) -> None:
        super().__init__(url, shared, size)
        self._client = client

    def _fetch(self, start: int, end: int) -> tuple[bytes, int | None]:
        data, total, wire = self._client.get_range(self.name, start, end)
        if wire > len(data):  # a small body sent whole: count what came over the wire
            self._shared.counter.add(wire - len(data))
        return data, total

    def _remote_size(self) -> int:
        ok, size, _ = self._client.head(self.name)
        if not ok:
            raise RemoteError("not found (HTTP 404)", self.name)
        if size is None:
            raise RemoteError("server did not say how large the file is", self.name)
        return size


class HttpLocation(Location):
    """A file or folder under an ``http(s)://`` URL. A folder URL ends with ``/`` (or has none of
    its own but holds a well-known file); folders are probed, never listed."""

    def __init__(self, url: str, shared: _Shared, client: HttpClient | None = None) -> None:
        self.url = url
        self.display = url
        self._shared = shared
        self._client = client or HttpClient(shared.options)
        self._dir: bool | None = True if url.endswith("/") else None

    def _probe(self) -> tuple[bool, int | None, str]:
        cache = self._shared.exists_cache
        if self.url not in cache:
            cache[self.url] = self._client.head(self.url)
        return cache[self.url]

    def child(self, name: str) -> HttpLocation:
        base = self.url if self.url.endswith("/") else self.url + "/"
        return HttpLocation(base + name.lstrip("/"), self._shared, self._client)

    def is_dir(self) -> bool:
        if self._dir is None:
            ok, _, final = self._probe()
            if ok and final.endswith("/"):  # the server redirected .../ckpt to .../ckpt/
                self._dir = True
            else:
                self._dir = not ok and bool(self._present(WELL_KNOWN))
        return self._dir

    def exists(self) -> bool:
        if self.url.endswith("/"):
            return True  # a folder URL: its contents are probed when asked for
        return self._probe()[0] or self.is_dir()

    def _present(self, names: Sequence[str]) -> list[str]:
        kids = [self.child(n) for n in names]
        found = self._shared.pool().map(lambda k: k._probe()[0], kids)
        return [n for n, ok in zip(names, found, strict=True) if ok]

    def listdir(self) -> list[str]:
        """The well-known names that exist here, plus the files an index names (HTTP has no
        listing: this is a probe, documented as such)."""
        names = set(self._present(WELL_KNOWN))
        for index in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
            if index in names:
                try:
                    names.update(self.child(index).read_json().get("weight_map", {}).values())
                except (AttributeError, FormatError):
                    pass
        return sorted(names)

    def open(self) -> HttpSource:
        size = self._shared.exists_cache.get(self.url, (False, None, ""))[1]
        return HttpSource(self.url, self._shared, self._client, size)

    def read_bytes(self, limit: int = 64 * 1024 * 1024) -> bytes:
        """A small whole file, fetched once per location tree (readers may ask twice)."""
        return _cached_small(self._shared, self.url, lambda: Location.read_bytes(self, limit))

    @property
    def name(self) -> str:
        return posixpath.basename(urlsplit(self.url).path.rstrip("/"))

    @property
    def bytes_read(self) -> int:
        return self._shared.counter.value


def remote_location(
    url: str,
    options: RemoteOptions | None = None,
    storage_options: dict[str, Any] | None = None,
) -> Location:
    """A :class:`Location` for a URL. ``storage_options`` go to the fsspec backend (e.g.
    ``{"endpoint_url": ...}`` for an S3-compatible store); ``CKPT_AUDIT_STORAGE_OPTIONS`` (JSON)
    in the environment does the same from the command line."""
    import os

    shared = _Shared(options or RemoteOptions())
    scheme = urlsplit(url).scheme.lower()
    if scheme in ("http", "https"):
        parts = urlsplit(url)
        return HttpLocation(urlunsplit((scheme, parts.netloc, parts.path or "/", parts.query, "")),
                            shared)
    if storage_options is None:
        env = os.environ.get("CKPT_AUDIT_STORAGE_OPTIONS")
        try:
            storage_options = json.loads(env) if env else {}
        except json.JSONDecodeError as exc:
            raise RemoteError(f"CKPT_AUDIT_STORAGE_OPTIONS is not JSON ({exc})", url) from None
    from ckpt_audit.remote_fsspec import FsspecLocation, _filesystem

    protocol = "gs" if scheme == "gcs" else scheme
    fs = _filesystem(protocol, url, storage_options or {})
    return FsspecLocation(fs, protocol, url.split("://", 1)[1], shared)
