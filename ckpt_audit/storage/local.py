"""Local files: ``os.pread`` on a descriptor, no read-ahead beyond the OS page cache."""

from __future__ import annotations

import os
import stat
from typing import Any

from ckpt_audit.errors import FormatError
from ckpt_audit.storage.base import ByteCounter, ByteSource, Location, inside_name, loads_json

_KINDS = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
          (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"))


def _kind(mode: int) -> str:
    return next((k for test, k in _KINDS if test(mode)), "not a plain file")


def check_argument(path: str) -> None:
    """A path the user gave must be a folder or a regular file (a FIFO would block reads)."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return  # absent: the caller says so in its own words
    if not (stat.S_ISDIR(mode) or stat.S_ISREG(mode)):
        raise FormatError(f"is {_kind(mode)}, not a checkpoint file or folder", path)


def open_regular(path: str, display: str | None = None) -> int:
    """A read-only descriptor of a regular file. Opened with ``O_NONBLOCK`` and checked with
    ``fstat`` before any read, so a FIFO, folder, device or socket is a one-line
    :class:`FormatError`, never a hang."""
    shown = display or path
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise FormatError(f"cannot open ({exc.strerror})", shown) from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise FormatError(f"is {_kind(mode)}, not a regular file (only regular files are read)",
                          shown)
    return fd


def read_local(path: str, limit: int, display: str | None = None) -> bytes:
    """The first ``limit`` bytes of a regular file (all of a small one)."""
    fd = open_regular(path, display)
    try:
        return _read_all(fd, min(limit, os.fstat(fd).st_size), display or path)
    finally:
        os.close(fd)


#: The last JSON document read with ``shared=True``, by the identity of its file: a shard index
#: is read by the completeness check and again by the reader (9 MB, 92k entries for DeepSeek-V3).
_SHARED: dict[tuple[int, ...], Any] = {}
JSON_LIMIT = 64 * 1024 * 1024


def read_json_local(path: str, display: str | None = None, what: str = "JSON",
                    shared: bool = False) -> tuple[Any, int]:
    """A local JSON file parsed within the budgets (:func:`loads_json`), and its size; refused
    over :data:`JSON_LIMIT` bytes. With ``shared=True`` an unchanged file (same device, inode,
    size, mtime and ctime, taken from the descriptor opened here) parsed by an earlier shared
    call is not parsed again: the caller must treat the document as read-only."""
    shown = display or path
    fd = open_regular(path, shown)
    try:
        st = os.fstat(fd)
        key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
        if shared and key in _SHARED:
            return _SHARED[key], st.st_size
        if st.st_size > JSON_LIMIT:
            raise FormatError(f"file is {st.st_size} bytes, over the {JSON_LIMIT} expected",
                              shown)
        data = _read_all(fd, st.st_size, shown)
    finally:
        os.close(fd)
    obj = loads_json(data, shown, what)
    if shared:
        _SHARED.clear()
        _SHARED[key] = obj
    return obj, len(data)


def _read_all(fd: int, size: int, shown: str) -> bytes:
    try:  # one read is the whole file almost always (a 9 MB index: no chunks to join)
        data = os.read(fd, size) if size > 0 else b""
    except OSError as exc:
        raise FormatError(f"cannot read ({exc.strerror})", shown) from None
    if len(data) == size:
        return data
    chunks, left = [data], size - len(data)
    try:
        while left > 0:
            chunk = os.read(fd, min(left, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
    except OSError as exc:
        raise FormatError(f"cannot read ({exc.strerror})", shown) from None
    if left > 0:  # shorter than it was a moment ago: being written or truncated
        raise FormatError(f"the file shrank while being read ({size - left} of {size} bytes)",
                          shown)
    return b"".join(chunks)


def within(path: str, folder: str) -> bool:
    """Whether ``path`` resolves (symlinks followed) inside ``folder``. One exception, for the
    Hugging Face cache: ``snapshots/<rev>/<file>`` links into the sibling ``blobs/`` folder."""
    real, top = os.path.realpath(path), os.path.realpath(folder)
    if real == top or real.startswith(top.rstrip(os.sep) + os.sep):
        return True
    snap = _hf_snapshot(folder)
    if snap is None:
        return False
    blobs = os.path.join(os.path.dirname(os.path.dirname(os.path.realpath(snap))), "blobs")
    return os.path.dirname(real) == blobs


def _plain_entry(path: str) -> bool:
    """Whether ``path``, an entry directly in a folder, is no symbolic link: then it resolves
    inside the folder wherever the folder resolves (one ``lstat``, where :func:`within` resolves
    both paths component by component: 800 calls for a 162-shard index)."""
    try:
        return not stat.S_ISLNK(os.lstat(path).st_mode)
    except OSError:
        return True  # absent: nothing to follow (as ``within`` finds), and ``exists`` says so


def _hf_snapshot(folder: str) -> str | None:
    """The ``.../snapshots/<rev>`` folder ``folder`` is in (or is), if any."""
    parts = os.path.abspath(folder).split(os.sep)
    for i in range(len(parts) - 2, 0, -1):
        if parts[i] == "snapshots" and parts[i - 1].startswith(("models--", "datasets--")):
            return os.sep.join(parts[: i + 2])
    return None


class LocalSource(ByteSource):
    """A local file read with ``os.pread``: no read-ahead beyond what the OS page cache does."""

    def __init__(self, path: str, counter: ByteCounter, display: str | None = None) -> None:
        self.name = display or path
        self._counter = counter
        self._fd = -1
        self._fd = open_regular(path, self.name)
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
        """The entry ``name`` inside this folder; it must stay inside after symlinks are
        resolved (:func:`within`), so a checkpoint is a closed world."""
        name = inside_name(name, self.display)
        loc = LocalLocation(os.path.join(self.path, name), self._counter)
        loc.display = os.path.join(self.display, name)
        if ("/" in name or not _plain_entry(loc.path)) and not within(loc.path, self.path):
            raise FormatError(f"{name!r} resolves outside the checkpoint folder (a symlink to "
                              f"{os.path.realpath(loc.path)}): refused", self.display)
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
        return LocalSource(self.path, self._counter, self.display)

    def read_json(self, shared: bool = False) -> Any:
        obj, size = read_json_local(self.path, self.display, shared=shared)
        self._counter.add(size)  # read by this process, if by an earlier shared call
        return obj

    @property
    def name(self) -> str:
        return os.path.basename(self.path.rstrip("/"))

    @property
    def local_path(self) -> str:
        return self.path

    @property
    def bytes_read(self) -> int:
        return self._counter.value
