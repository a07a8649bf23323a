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

import numpy as np

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

    def read_json(self, shared: bool = False) -> Any:
        """Parse a small JSON file, with a clear error naming it. ``shared=True`` (a shard
        index) lets a local file parsed earlier in this process, and unchanged since, be
        returned again without a second parse: the caller must treat it as read-only."""
        return loads_json(self.read_bytes(), self.display)


#: Budgets for every JSON document read (headers, indexes, configs, local or remote):
#: nesting deeper than this or an integer longer than this many digits is refused (exit 2).
JSON_MAX_DEPTH = 64
JSON_MAX_DIGITS = 64


def loads_json(data: bytes | str, source: str, what: str = "JSON") -> Any:
    """Parse untrusted JSON within the budgets; any failure is a :class:`FormatError` naming
    ``source`` (never a RecursionError or the interpreter's int-digits ValueError). A key that
    appears twice in one object is refused: which one a reader would use is ambiguous.

    Design note: the strict parse scans the depth first and calls a Python hook per object to
    catch a repeated key, which costs more than the parse on a 9 MB shard index. A document
    that nests at most two deep (an index, most configs) is parsed plainly instead and proven
    within the budgets afterwards (:func:`_flat_keys`, :func:`no_repeated_keys`); anything
    else, and any document the plain parse refuses, goes through the strict parse, which
    decides and words the refusal."""
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data
    parsed, obj = _parse_plain(raw)
    if parsed:
        keys = _flat_keys(obj)
        if keys is not None and no_repeated_keys(raw, keys):
            return obj
    _within_depth(raw, source, what)
    return _strict_loads(raw, source, what)


_SCALARS = frozenset((str, int, float, bool, type(None)))


def _flat_keys(obj: Any) -> int | None:
    """The keys of ``obj`` and of the objects directly in it, when nothing in it nests deeper
    than one container inside another and every integer is within the digit budget; else None.
    C-level passes (``map``, ``set``) over the values, Python only per nested container."""
    if type(obj) in _SCALARS:
        return 0 if _ints_ok((obj,)) else None
    vals = obj.values() if type(obj) is dict else obj
    keys = len(obj) if type(obj) is dict else 0
    types = set(map(type, vals))
    if int in types and not _ints_ok(vals):
        return None
    if types <= _SCALARS:
        return keys
    for v in vals:
        if type(v) in _SCALARS:
            continue
        inner = v.values() if type(v) is dict else v
        inner_types = set(map(type, inner))
        if not inner_types <= _SCALARS or (int in inner_types and not _ints_ok(inner)):
            return None
        keys += len(v) if type(v) is dict else 0
    return keys


_INT_LIMIT = 10**JSON_MAX_DIGITS


def _ints_ok(vals: Any) -> bool:
    """Every int among ``vals`` has at most ``JSON_MAX_DIGITS`` digits."""
    ints = [v for v in vals if type(v) is int]
    return not ints or (max(ints) < _INT_LIMIT and min(ints) > -_INT_LIMIT)


def no_repeated_keys(raw: bytes, keys: int) -> bool:
    """Whether the JSON text ``raw``, whose parse kept ``keys`` keys in all its objects, had no
    repeated key (a repeat collapses into one key but keeps its colon: every key is followed by
    exactly one colon outside strings, and no other colon stands outside them)."""
    return count_byte(raw, 0x3A) == keys or colons_outside_strings(raw) == keys


#: Bytes per step of the byte scans below (:func:`count_byte`, :func:`has_byte_in`,
#: :func:`has_byte_below`): the step's temporaries stay in a core's cache and are reused, never
#: a fresh 9 MB to fault in.
_STEP = 1 << 18


def count_byte(data: bytes, byte: int) -> int:
    """How many times ``byte`` occurs in ``data``. ``bytes.count`` of one byte is a byte-at-a-
    time loop (~8 instructions a byte: 70 M for a 9 MB shard index); numpy compares a vector
    at a time."""
    if len(data) < _STEP:
        return data.count(byte)
    arr = np.frombuffer(data, np.uint8)
    return sum(int(np.count_nonzero(arr[i:i + _STEP] == byte))
               for i in range(0, arr.size, _STEP))


def has_byte_in(data: bytes, low: int, high: int) -> bool:
    """Whether any byte of ``data`` is within ``low``..``high`` (inclusive), a vector at a
    time."""
    arr = np.frombuffer(data, np.uint8)
    span = np.uint8(high - low)
    return any(bool(((arr[i:i + _STEP] - np.uint8(low)) <= span).any())
               for i in range(0, arr.size, _STEP))


def has_byte_below(data: bytes, limit: int, size: int | None = None) -> bool:
    """Whether any of the first ``size`` bytes of ``data`` (all by default) is below ``limit``
    (e.g. 32: an ASCII control character), a vector at a time."""
    arr = np.frombuffer(data, np.uint8, len(data) if size is None else size)
    return any(bool((arr[i:i + _STEP] < limit).any()) for i in range(0, arr.size, _STEP))


def loads_json_plain(raw: bytes) -> Any | None:
    """``json.loads`` of ``raw`` with no per-object hook and no depth scan: ``None`` when it
    fails, or when an integer is over the digit budget. Only for a caller that proves the result
    within the budgets and free of repeated keys by itself, and else falls back to the strict
    parse (:func:`loads_json`; the safetensors header parser, for 92k entries at C speed)."""
    if _LONG_RUN in raw.translate(_DIGITS):
        return None
    return _parse_plain(raw)[1]


def _parse_plain(raw: bytes) -> tuple[bool, Any]:
    """(True, the document) when ``json.loads`` takes ``raw``, else (False, None)."""
    try:
        return True, json.loads(raw)
    except (RecursionError, UnicodeDecodeError, ValueError):
        return False, None


def colons_outside_strings(raw: bytes) -> int:
    """How many ``:`` of JSON text ``raw`` stand outside its strings: one per key/value pair of
    every object, when ``raw`` is valid JSON."""
    return json_scan(raw, 0)[1]


def _within_depth(raw: bytes, source: str, what: str) -> None:
    """Refuse ``raw`` nested deeper than the budget."""
    if json_scan(raw, JSON_MAX_DEPTH)[0] > JSON_MAX_DEPTH:
        raise FormatError(f"{what} nested deeper than the {JSON_MAX_DEPTH}-level budget", source)


def _strict_loads(raw: bytes, source: str, what: str) -> Any:
    try:
        if _LONG_RUN in raw.translate(_DIGITS):
            return json.loads(raw, parse_int=_bounded_int, object_pairs_hook=_unique)
        return json.loads(raw, object_pairs_hook=_unique)
    except RecursionError:
        raise FormatError(f"{what} nested deeper than the {JSON_MAX_DEPTH}-level budget",
                          source) from None
    except (UnicodeDecodeError, ValueError) as exc:  # JSONDecodeError is a ValueError
        raise FormatError(f"not valid {what} ({exc})", source) from None


_KEEP = b'"[]{}:'
_NOT_KEPT = bytes(c for c in range(256) if c not in _KEEP)
_BRACKETS = bytes.maketrans(b"{}", b"[]")
_DIGITS = bytes.maketrans(bytes(range(256)), bytes(57 if 48 <= c <= 57 else 32 for c in range(256)))
_LONG_RUN = b"9" * (JSON_MAX_DIGITS + 1)


def json_scan(raw: bytes, limit: int) -> tuple[int, int]:
    """How deep the containers of JSON text nest (at most ``limit + 1`` is counted), and how
    many colons stand outside its strings, in C-speed passes: escapes dropped, everything but
    quotes, brackets and colons deleted, string bodies dropped, colons counted and deleted, then
    one innermost ``[]`` level removed per pass. Malformed text is left to the parser."""
    seq = raw.replace(b"\\\\", b"").replace(b'\\"', b"").translate(None, _NOT_KEPT)
    if b'"' in seq:
        # an adjacent pair of quotes is an empty string or the gap between two strings: either
        # way nothing outside a string is lost by dropping it
        seq = b"".join(seq.replace(b'""', b"").split(b'"')[::2])
    colons = seq.count(b":")
    seq = seq.translate(_BRACKETS, b":")
    depth = 0
    while seq and depth <= limit:
        shorter = seq.replace(b"[]", b"")
        if len(shorter) == len(seq):
            break  # unbalanced: not JSON, the parser says so
        seq, depth = shorter, depth + 1
    return depth, colons


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


