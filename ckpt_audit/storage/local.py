"""Local files: ``os.pread`` on a descriptor, no read-ahead beyond the OS page cache."""

from __future__ import annotations

import os

from ckpt_audit.errors import FormatError
from ckpt_audit.storage.base import ByteCounter, ByteSource, Location


class LocalSource(ByteSource):
    """A local file read with ``os.pread``: no read-ahead beyond what the OS page cache does."""

    def __init__(self, path: str, counter: ByteCounter) -> None:
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

    def __init__(self, path: str, counter: ByteCounter | None = None) -> None:
        self.path = os.path.abspath(path)
        self.display = path
        self._counter = counter or ByteCounter()

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
