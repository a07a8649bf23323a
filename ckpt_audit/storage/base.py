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
        return loads_json(self.read_bytes(), self.display)


#: Budgets for every JSON document read (headers, indexes, configs, local or remote):
#: nesting deeper than this or an integer longer than this many digits is refused (exit 2).
JSON_MAX_DEPTH = 64
JSON_MAX_DIGITS = 64


def loads_json(data: bytes | str, source: str, what: str = "JSON") -> Any:
    """Parse untrusted JSON within the budgets; any failure is a :class:`FormatError` naming
    ``source`` (never a RecursionError or the interpreter's int-digits ValueError). A key that
    appears twice in one object is refused: which one a reader would use is ambiguous."""
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data
    if json_depth(raw, JSON_MAX_DEPTH) > JSON_MAX_DEPTH:
        raise FormatError(f"{what} nested deeper than the {JSON_MAX_DEPTH}-level budget", source)
    try:
        if _LONG_RUN in raw.translate(_DIGITS):
            return json.loads(raw, parse_int=_bounded_int, object_pairs_hook=_unique)
        return json.loads(raw, object_pairs_hook=_unique)
    except RecursionError:
        raise FormatError(f"{what} nested deeper than the {JSON_MAX_DEPTH}-level budget",
                          source) from None
    except (UnicodeDecodeError, ValueError) as exc:  # JSONDecodeError is a ValueError
        raise FormatError(f"not valid {what} ({exc})", source) from None


_KEEP = b'"[]{}'
_NOT_KEPT = bytes(c for c in range(256) if c not in _KEEP)
_BRACKETS = bytes.maketrans(b"{}", b"[]")
_DIGITS = bytes.maketrans(bytes(range(256)), bytes(57 if 48 <= c <= 57 else 32 for c in range(256)))
_LONG_RUN = b"9" * (JSON_MAX_DIGITS + 1)


def json_depth(raw: bytes, limit: int) -> int:
    """How deep the containers of JSON text nest (at most ``limit + 1`` is counted), in C-speed
    passes: escapes dropped, everything but quotes and brackets deleted, string bodies dropped,
    then one innermost ``[]`` level removed per pass. Malformed text is left to the parser."""
    seq = raw.replace(b"\\\\", b"").replace(b'\\"', b"").translate(None, _NOT_KEPT)
    if b'"' in seq:
        # an adjacent pair of quotes is an empty string or the gap between two strings: either
        # way nothing outside a string is lost by dropping it
        seq = b"".join(seq.replace(b'""', b"").split(b'"')[::2])
    seq = seq.translate(_BRACKETS)
    depth = 0
    while seq and depth <= limit:
        shorter = seq.replace(b"[]", b"")
        if len(shorter) == len(seq):
            break  # unbalanced: not JSON, the parser says so
        seq, depth = shorter, depth + 1
    return depth


def _unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        dup = next(k for k, _ in pairs if k in seen or seen.add(k))  # type: ignore[func-returns-value]
        raise ValueError(f"key {dup!r} appears twice in one object")
    return obj


def _bounded_int(text: str) -> int:
    if len(text.lstrip("-")) > JSON_MAX_DIGITS:
        raise ValueError(f"an integer of {len(text.lstrip('-'))} digits is over the "
                         f"{JSON_MAX_DIGITS}-digit budget")
    return int(text)


def inside_name(name: str, folder: str) -> str:
    """``name`` as a relative path that stays inside ``folder``, else a :class:`FormatError`.

    Every file a checkpoint names (an index's shards, a Megatron tracker's iteration, a
    DeepSpeed ``latest`` tag, a DCP metadata's files) goes through here: an absolute path, a
    drive, a ``..`` component, a backslash or a control character is refused, so a checkpoint is
    a closed world and no ``../`` is ever requested over HTTP."""
    parts = name.split("/")
    bad = (not name or name.startswith("/") or "\\" in name or ":" in parts[0]
           or any(p == ".." for p in parts) or not name.isprintable())
    if bad:
        raise FormatError(f"names {name!r}, which is not a path inside the checkpoint folder "
                          "(absolute, '..', or odd characters): refused", folder)
    return "/".join(p for p in parts if p not in ("", "."))


class ByteCounter:
    """Bytes fetched, shared by a location tree and its sources (thread-safe)."""

    def __init__(self) -> None:
        self.value = 0
        self._lock = threading.Lock()

    def add(self, n: int) -> None:
        with self._lock:
            self.value += n


