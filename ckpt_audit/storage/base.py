"""Byte access behind one small interface, so every reader works on local disk and remote URLs.

A :class:`Location` is a file or folder (local path, or a URL handled by
:mod:`ckpt_audit.storage.http` / :mod:`ckpt_audit.storage.fsspec_backend`). A :class:`ByteSource`
reads byte ranges of one file. Readers only ever
ask for ranges: a header, then the bytes of each gain. ``bytes_read`` counts what was fetched.
"""

from __future__ import annotations

import json
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


class ByteCounter:
    """Bytes fetched, shared by a location tree and its sources (thread-safe)."""

    def __init__(self) -> None:
        self.value = 0
        self._lock = threading.Lock()

    def add(self, n: int) -> None:
        with self._lock:
            self.value += n


