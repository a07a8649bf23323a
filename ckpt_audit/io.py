"""Byte access behind one small interface, so every reader works on local disk and remote URLs.

A :class:`Location` is a file or folder (local path, or a URL handled by
:mod:`ckpt_audit.remote`). A :class:`ByteSource` reads byte ranges of one file. Readers only ever
ask for ranges: a header, then the bytes of each gain. ``bytes_read`` counts what was fetched.
"""

from __future__ import annotations

import json
import os
import threading
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

from ckpt_audit.errors import FormatError


class ByteSource(ABC):
    """Random access to the bytes of one file."""

    name: str

    @abstractmethod
    def size(self) -> int:
        """Total size of the file in bytes."""

    @abstractmethod
    def read(self, offset: int, length: int) -> bytes:
        """Exactly ``length`` bytes at ``offset``; raises :class:`FormatError` when short."""

    def read_ranges(self, ranges: Sequence[tuple[int, int]]) -> list[bytes]:
        """Several ``(offset, length)`` ranges; remote sources merge and parallelise them."""
        return [self.read(o, n) for o, n in ranges]

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release the file handle, if any."""


class Location(ABC):
    """A file or folder that a checkpoint lives in (local or remote)."""

    display: str

    @abstractmethod
    def child(self, name: str) -> Location:
        """The entry ``name`` inside this folder (``name`` may contain ``/``)."""

    @abstractmethod
    def is_dir(self) -> bool: ...

    @abstractmethod
    def exists(self) -> bool: ...

    @abstractmethod
    def listdir(self) -> list[str]:
        """Names of the entries of this folder, sorted."""

    @abstractmethod
    def open(self) -> ByteSource: ...

    @property
    @abstractmethod
    def name(self) -> str:
        """The last component of the path."""

    @property
    def local_path(self) -> str | None:
        """The filesystem path where this is on local disk, else ``None``."""
        return None

    @property
    def bytes_read(self) -> int:
        """Bytes fetched through this location and its children so far."""
        return 0

    def read_bytes(self, limit: int = 64 * 1024 * 1024) -> bytes:
        """The whole (small) file: config.json, index files. Refuses files over ``limit``."""
        src = self.open()
        try:
            n = src.size()
            if n > limit:
                raise FormatError(f"file is {n} bytes, over the {limit} expected",
                                  self.display)
            return src.read(0, n)
        finally:
            src.close()

    def read_json(self) -> Any:
        """Parse a small JSON file, with a clear error naming it."""
        data = self.read_bytes()
        try:
            return json.loads(data)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise FormatError(f"not valid JSON ({exc})", self.display) from None


class _Counter:
    def __init__(self) -> None:
        self.value = 0
        self._lock = threading.Lock()

    def add(self, n: int) -> None:
        with self._lock:
            self.value += n


class LocalSource(ByteSource):
    """A local file read with ``os.pread``: no read-ahead beyond what the OS page cache does."""

    def __init__(self, path: str, counter: _Counter) -> None:
        self.name = path
        self._counter = counter
        try:
            self._fd = os.open(path, os.O_RDONLY)
        except OSError as exc:
            raise FormatError(f"cannot open ({exc.strerror})", path) from None
        self._size = os.fstat(self._fd).st_size

    def size(self) -> int:
        return self._size

    def read(self, offset: int, length: int) -> bytes:
        if offset < 0 or length < 0 or offset + length > self._size:
            raise FormatError(
                f"range [{offset}, {offset + length}) is outside the file ({self._size} bytes)",
                self.name,
            )
        data = os.pread(self._fd, length, offset)
        if len(data) != length:
            raise FormatError(f"short read at offset {offset}", self.name)
        self._counter.add(length)
        return data

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __del__(self) -> None:  # pragma: no cover - best effort
        try:
            self.close()
        except Exception:
            pass


class LocalLocation(Location):
    """A path on local disk."""

    def __init__(self, path: str, counter: _Counter | None = None) -> None:
        self.path = os.path.abspath(path)
        self.display = path
        self._counter = counter or _Counter()

    def child(self, name: str) -> LocalLocation:
        loc = LocalLocation(os.path.join(self.path, name), self._counter)
        loc.display = os.path.join(self.display, name)
        return loc

    def is_dir(self) -> bool:
        return os.path.isdir(self.path)

    def exists(self) -> bool:
        return os.path.exists(self.path)

    def listdir(self) -> list[str]:
        try:
            return sorted(os.listdir(self.path))
        except OSError as exc:
            raise FormatError(f"cannot list folder ({exc.strerror})", self.display) from None

    def open(self) -> LocalSource:
        src = LocalSource(self.path, self._counter)
        src.name = self.display
        return src

    @property
    def name(self) -> str:
        return os.path.basename(self.path.rstrip("/"))

    @property
    def local_path(self) -> str:
        return self.path

    @property
    def bytes_read(self) -> int:
        return self._counter.value


def is_url(path: str) -> bool:
    """True for ``scheme://...`` paths that need :mod:`ckpt_audit.remote`."""
    return "://" in path and not path.startswith("file://")


def location(path: str) -> Location:
    """A :class:`Location` for a local path or a URL (``https://``, ``s3://``, ``hf://``...)."""
    if path.startswith("file://"):
        path = path[len("file://") :]
    if is_url(path):
        try:
            from ckpt_audit.remote import remote_location
        except ImportError as exc:  # pragma: no cover - remote support is part of the package
            raise FormatError(f"remote reads are unavailable ({exc})", path) from None
        return remote_location(path)
    return LocalLocation(path)
