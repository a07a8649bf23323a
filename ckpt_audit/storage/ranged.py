"""Remote files read by byte ranges: a head cache for headers, merged parallel range requests.

What goes over the wire, by design (see docs/REMOTE.md):

- the first read near the start of a file fetches one block of ``head_block`` bytes (64 KiB) and
  serves the 8-byte length and the header from it; a larger header costs one more request for the
  missing part only (the *head cache*, the only cache there is);
- every other read fetches exactly its range; :meth:`RangedSource.read_ranges` merges ranges
  closer than ``merge_gap`` and runs the requests in a thread pool;
- no read-ahead: backends fetch exactly ``[start, end)``.

Every fetched byte is counted in ``Location.bytes_read``. Backends: :mod:`ckpt_audit.storage.http`
(plain HTTP(S)) and :mod:`ckpt_audit.storage.fsspec_backend` (``s3://``, ``gs://``, ``hf://``).
"""

from __future__ import annotations

import threading
from abc import abstractmethod
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

from ckpt_audit.errors import FormatError
from ckpt_audit.storage.base import ByteCounter, ByteSource
from ckpt_audit.storage.options import RemoteOptions


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


class SharedState:
    """What a remote location tree shares: counter, options, worker pool, small caches."""

    def __init__(self, options: RemoteOptions) -> None:
        self.options = options
        self.counter = ByteCounter()
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

    def __init__(self, name: str, shared: SharedState, size: int | None = None) -> None:
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


def cached_small(shared: SharedState, key: str, fetch: Callable[[], bytes]) -> bytes:
    if key not in shared.small_files:
        shared.small_files[key] = fetch()
    return shared.small_files[key]
