"""``http(s)://`` checkpoints: folders are probed for well-known names, files read by ranges."""

from __future__ import annotations

import posixpath
from collections.abc import Sequence
from urllib.parse import quote, urlsplit

from ckpt_audit.errors import RemoteError
from ckpt_audit.storage.base import Location, inside_name
from ckpt_audit.storage.http_client import HttpClient
from ckpt_audit.storage.ranged import RangedSource, SharedState, cached_small

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


class HttpSource(RangedSource):
    def __init__(self, url: str, shared: SharedState, client: HttpClient, size: int | None) -> None:
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

    def __init__(self, url: str, shared: SharedState, client: HttpClient | None = None) -> None:
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
        name = quote(inside_name(name, self.display), safe="/")
        base = self.url if self.url.endswith("/") else self.url + "/"
        return HttpLocation(base + name, self._shared, self._client)

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
        """The well-known names that exist here (HTTP has no listing: this is a probe, documented
        as such). Shards are found through the index a reader reads, not here."""
        return sorted(self._present(WELL_KNOWN))

    def open(self) -> HttpSource:
        size = self._shared.exists_cache.get(self.url, (False, None, ""))[1]
        return HttpSource(self.url, self._shared, self._client, size)

    def read_bytes(self, limit: int = 64 * 1024 * 1024) -> bytes:
        """A small whole file, fetched once per location tree (readers may ask twice)."""
        return cached_small(self._shared, self.url, lambda: Location.read_bytes(self, limit))

    @property
    def name(self) -> str:
        return posixpath.basename(urlsplit(self.url).path.rstrip("/"))

    @property
    def bytes_read(self) -> int:
        return self._shared.counter.value
