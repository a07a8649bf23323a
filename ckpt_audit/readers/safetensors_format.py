"""The safetensors header: parsed and validated in pure Python, with no torch and no Rust reader.

Layout: u64 little-endian header length N, N bytes of UTF-8 JSON
``{name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {...}}``, then data.
A tensor's absolute offset is ``8 + N + begin``. Every field is checked against the file size
before it is trusted, so a hostile header can only produce a :class:`FormatError`.
"""

from __future__ import annotations

import json
import struct
from collections.abc import KeysView
from operator import itemgetter
from typing import Any, NamedTuple

from ckpt_audit.errors import FormatError
from ckpt_audit.readers.dtypes import ITEMSIZE

_OFFSETS, _END = itemgetter("data_offsets"), itemgetter(1)

#: The Rust reader's cap on the header length; larger headers are refused, as there.
MAX_HEADER = 100_000_000


class TensorEntry(NamedTuple):
    """One tensor of a safetensors file: dtype, shape and absolute byte range in the file.

    A NamedTuple, not a dataclass: a DeepSeek-V3 checkpoint has 92k of these.
    """

    dtype: str
    shape: tuple[int, ...]
    start: int
    end: int


class SafetensorsHeader:
    """A parsed header: entries by name, the optional ``__metadata__`` and the data start.

    Parsing checks that the header is a JSON object. Each entry is checked in full (dtype,
    shape, byte range inside the file's data section, size = numel × itemsize) when it is first
    asked for by :meth:`entry`, before any of its bytes are read: a DeepSeek-V3 checkpoint has
    92k entries and the audit needs ~250 of them, so the other 91,700 are never trusted or
    paid for. :attr:`tensors` checks every entry.
    """

    def __init__(self, raw: dict[str, Any], metadata: dict[str, str], data_start: int,
                 data_len: int, source: str) -> None:
        self._raw = raw
        self._done: dict[str, TensorEntry] = {}
        self.metadata = metadata
        self.data_start = data_start
        self.data_len = data_len
        self.source = source

    @property
    def names(self) -> list[str]:
        """Tensor names in header order."""
        return list(self._raw)

    @property
    def raw_names(self) -> KeysView[str]:
        """Tensor names in header order, without a copy (a view of the parsed header)."""
        return self._raw.keys()

    def __contains__(self, name: object) -> bool:
        return name in self._raw

    def entry(self, name: str) -> TensorEntry:
        """The fully validated entry of ``name``."""
        e = self._done.get(name)
        if e is None:
            e = _entry(name, self._raw[name], self.data_start, self.data_len, self.source)
            self._done[name] = e
        return e

    @property
    def tensors(self) -> dict[str, TensorEntry]:
        """Every entry, each fully validated."""
        return {n: self.entry(n) for n in self._raw}


def prefix_length(prefix: bytes, source: str) -> int:
    """N, the header length in the 8-byte little-endian prefix (refused above MAX_HEADER)."""
    if len(prefix) < 8:
        raise FormatError("truncated: shorter than the 8-byte header length", source)
    (n,) = struct.unpack("<Q", prefix[:8])
    if n > MAX_HEADER:
        raise FormatError(f"header length {n} exceeds the {MAX_HEADER}-byte limit", source)
    return int(n)


def header_length(prefix: bytes, file_size: int, source: str) -> int:
    """Validate the 8-byte length prefix against the file size and return N."""
    if file_size == 0:
        raise FormatError("empty file", source)
    if file_size < 8:
        raise FormatError("truncated: shorter than the 8-byte header length", source)
    n = prefix_length(prefix, source)
    if 8 + n > file_size:
        raise FormatError(
            f"truncated: header says {n} bytes but the file has {file_size - 8} after the prefix",
            source,
        )
    return n


def _json_object(raw: bytes, source: str) -> dict[str, Any]:
    try:
        obj: Any = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FormatError(f"header is not valid JSON ({exc})", source) from None
    if not isinstance(obj, dict):
        raise FormatError("header is not a JSON object", source)
    return obj


def declared_size(raw: bytes, source: str) -> int:
    """The size a complete file has by its JSON header ``raw``: 8 + N + the largest data end.

    Entries are not validated here: this judges a file that may still be being written (run
    discovery), by its size alone. Readers use :func:`parse_header`.
    """
    end = 0
    for key, meta in _json_object(raw, source).items():
        if key == "__metadata__" or not isinstance(meta, dict):
            continue
        offsets = meta.get("data_offsets")
        if isinstance(offsets, list) and len(offsets) == 2 and type(offsets[1]) is int:
            end = max(end, offsets[1])
    return 8 + len(raw) + end


def parse_header(raw: bytes, file_size: int, source: str) -> SafetensorsHeader:
    """Parse and validate the JSON header ``raw`` (the N bytes after the prefix)."""
    data_start = 8 + len(raw)
    data_len = file_size - data_start
    obj = _json_object(raw, source)
    metadata: dict[str, str] = {}
    meta = obj.pop("__metadata__", None)
    if isinstance(meta, dict):
        metadata = {str(k): str(v) for k, v in meta.items()}
    try:  # one cheap pass: the data section must hold every tensor (catches truncation)
        end_max = max(map(_END, map(_OFFSETS, obj.values())), default=0)
        ok = type(end_max) is int and end_max <= data_len
    except (TypeError, KeyError, IndexError, AttributeError):
        ok = False
    if not ok:
        for name, entry in obj.items():  # find and name the bad entry
            _entry(name, entry, data_start, data_len, source)
        raise FormatError("truncated or malformed header", source)
    return SafetensorsHeader(obj, metadata, data_start, data_len, source)


def _entry(name: str, entry: Any, data_start: int, data_len: int, source: str) -> TensorEntry:
    # Hot path (92k entries for DeepSeek-V3): exact type checks (``type(x) is int`` also
    # rejects bools) instead of isinstance/all() generators.
    if type(entry) is not dict:
        raise FormatError(f"tensor {name!r}: entry is not an object", source)
    dtype = entry.get("dtype")
    shape = entry.get("shape")
    offsets = entry.get("data_offsets")
    if type(dtype) is not str or dtype not in ITEMSIZE:
        raise FormatError(f"tensor {name!r}: unknown dtype {dtype!r}", source)
    if type(shape) is not list:
        raise FormatError(f"tensor {name!r}: bad shape {shape!r}", source)
    numel = 1
    for s in shape:
        if type(s) is not int or s < 0:
            raise FormatError(f"tensor {name!r}: bad shape {shape!r}", source)
        numel *= s
    if type(offsets) is not list or len(offsets) != 2:
        raise FormatError(f"tensor {name!r}: bad data_offsets {offsets!r}", source)
    begin, end = offsets
    if type(begin) is not int or type(end) is not int:
        raise FormatError(f"tensor {name!r}: bad data_offsets {offsets!r}", source)
    if not 0 <= begin <= end <= data_len:
        raise FormatError(
            f"tensor {name!r}: data_offsets [{begin}, {end}] outside the data "
            f"section ({data_len} bytes)",
            source,
        )
    if end - begin != numel * ITEMSIZE[dtype]:
        raise FormatError(
            f"tensor {name!r}: {end - begin} bytes for shape {shape} of {dtype}", source
        )
    return TensorEntry(dtype, tuple(shape), data_start + begin, data_start + end)
