"""The safetensors header: parsed and validated in pure Python, with no torch and no Rust reader.

Layout: u64 little-endian header length N, N bytes of UTF-8 JSON
``{name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {...}}``, then data.
A tensor's absolute offset is ``8 + N + begin``. Every field is checked against the file size
before it is trusted, so a hostile header can only produce a :class:`FormatError`.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from typing import Any

from ckpt_audit.errors import FormatError
from ckpt_audit.readers.dtypes import ITEMSIZE

#: The Rust reader's cap on the header length; larger headers are refused, as there.
MAX_HEADER = 100_000_000


@dataclass(frozen=True)
class TensorEntry:
    """One tensor of a safetensors file: dtype, shape and absolute byte range in the file."""

    dtype: str
    shape: tuple[int, ...]
    start: int
    end: int


@dataclass(frozen=True)
class SafetensorsHeader:
    """A parsed header: the tensors by name, the optional ``__metadata__`` and the data start."""

    tensors: dict[str, TensorEntry]
    metadata: dict[str, str]
    data_start: int


def header_length(prefix: bytes, file_size: int, source: str) -> int:
    """Validate the 8-byte length prefix and return N."""
    if file_size == 0:
        raise FormatError("empty file", source)
    if len(prefix) < 8 or file_size < 8:
        raise FormatError("truncated: shorter than the 8-byte header length", source)
    (n,) = struct.unpack("<Q", prefix[:8])
    if n > MAX_HEADER:
        raise FormatError(f"header length {n} exceeds the {MAX_HEADER}-byte limit", source)
    if 8 + n > file_size:
        raise FormatError(
            f"truncated: header says {n} bytes but the file has {file_size - 8} after the prefix",
            source,
        )
    return n


def parse_header(raw: bytes, file_size: int, source: str) -> SafetensorsHeader:
    """Parse and validate the JSON header ``raw`` (the N bytes after the prefix)."""
    data_start = 8 + len(raw)
    data_len = file_size - data_start
    try:
        obj: Any = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FormatError(f"header is not valid JSON ({exc})", source) from None
    if not isinstance(obj, dict):
        raise FormatError("header is not a JSON object", source)
    metadata: dict[str, str] = {}
    tensors: dict[str, TensorEntry] = {}
    for name, entry in obj.items():
        if name == "__metadata__":
            if isinstance(entry, dict):
                metadata = {str(k): str(v) for k, v in entry.items()}
            continue
        tensors[name] = _entry(name, entry, data_start, data_len, source)
    return SafetensorsHeader(tensors=tensors, metadata=metadata, data_start=data_start)


def _entry(name: str, entry: Any, data_start: int, data_len: int, source: str) -> TensorEntry:
    if not isinstance(entry, dict):
        raise FormatError(f"tensor {name!r}: entry is not an object", source)
    dtype = entry.get("dtype")
    shape = entry.get("shape")
    offsets = entry.get("data_offsets")
    if not isinstance(dtype, str) or dtype not in ITEMSIZE:
        raise FormatError(f"tensor {name!r}: unknown dtype {dtype!r}", source)
    if not isinstance(shape, list) or not all(
        isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in shape
    ):
        raise FormatError(f"tensor {name!r}: bad shape {shape!r}", source)
    if (
        not isinstance(offsets, list)
        or len(offsets) != 2
        or not all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)
    ):
        raise FormatError(f"tensor {name!r}: bad data_offsets {offsets!r}", source)
    begin, end = offsets
    if not 0 <= begin <= end <= data_len:
        raise FormatError(
            f"tensor {name!r}: data_offsets [{begin}, {end}] outside the data "
            f"section ({data_len} bytes)",
            source,
        )
    numel = 1
    for s in shape:
        numel *= s
    if end - begin != numel * ITEMSIZE[dtype]:
        raise FormatError(
            f"tensor {name!r}: {end - begin} bytes for shape {shape} of {dtype}", source
        )
    return TensorEntry(dtype=dtype, shape=tuple(shape), start=data_start + begin,
                       end=data_start + end)
