"""A bounded GGUF header parser: every count, length and offset checked against the file size.

Why not just ``gguf.GGUFReader``: it memory-maps the file and trusts the header, so a corrupt or
truncated file gives a numpy/struct traceback (or tries to build arrays from absurd counts)
instead of a one-line error, and it cannot read through a remote byte source. This parser reads
the header through :class:`~ckpt_audit.storage.ByteSource` in growing chunks, validates as it goes,
and hands out tensor byte ranges; the ``gguf`` package supplies the type table
(``GGML_QUANT_SIZES``) and dequantisation.

Layout (GGUF v2/v3, little-endian): magic ``GGUF``, uint32 version, uint64 tensor count, uint64
metadata count; metadata ``key: string, type: uint32, value``; tensor infos ``name: string,
n_dims: uint32, dims: uint64 × n_dims (innermost first, i.e. reversed numpy order), type: uint32,
offset: uint64`` (relative to the data section); the data section starts at the next multiple of
``general.alignment`` (default 32).
"""

from __future__ import annotations

import struct
from typing import Any

from ckpt_audit.errors import FormatError
from ckpt_audit.records import frozen
from ckpt_audit.storage import ByteSource

GGUF_MAGIC = b"GGUF"
MAX_DIMS = 4
#: metadata arrays longer than this are summarised (tokenizer vocabularies), not kept
KEEP_ARRAY = 64

# value type -> struct format for scalars (GGUFValueType numbering)
_SCALAR = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?",
           10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9


@frozen
class GGUFTensor:
    """One tensor: numpy-order shape, GGML type number, absolute byte range."""

    name: str
    shape: tuple[int, ...]
    ggml_type: int
    start: int
    nbytes: int


@frozen
class GGUFHeader:
    """A parsed GGUF header: version, metadata, tensors by name and where the data starts."""

    version: int
    metadata: dict[str, Any]
    tensors: dict[str, GGUFTensor]
    data_start: int


class _Cursor:
    """Sequential reads from a byte source, fetched in growing chunks, never past the end."""

    def __init__(self, src: ByteSource, size: int) -> None:
        self.src, self.size, self.pos = src, size, 0
        self._buf, self._buf_start = b"", 0
        self._chunk = 64 * 1024

    def take(self, n: int, what: str) -> bytes:
        if n < 0 or self.pos + n > self.size:
            raise FormatError(
                f"truncated or corrupt: {what} needs {n} bytes at offset {self.pos}, "
                f"the file has {self.size}", self.src.name)
        end = self._buf_start + len(self._buf)
        if self.pos + n > end:
            keep = self._buf[self.pos - self._buf_start :]
            want = max(n - len(keep), self._chunk)
            want = min(want, self.size - end)
            self._buf = keep + self.src.read(end, want)
            self._buf_start = self.pos
            self._chunk = min(self._chunk * 2, 16 * 1024 * 1024)
        off = self.pos - self._buf_start
        self.pos += n
        return self._buf[off : off + n]

    def unpack(self, fmt: str, what: str) -> Any:
        return struct.unpack(fmt, self.take(struct.calcsize(fmt), what))[0]

    def string(self, what: str) -> str:
        n = self.unpack("<Q", f"{what} length")
        raw = self.take(n, what)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise FormatError(f"{what} is not UTF-8 at offset {self.pos - n}", self.src.name)\
                from None


def _value(cur: _Cursor, vtype: int, key: str, depth: int = 0) -> Any:
    if vtype in _SCALAR:
        return cur.unpack(_SCALAR[vtype], f"value of {key}")
    if vtype == _STRING:
        return cur.string(f"string value of {key}")
    if vtype == _ARRAY and depth == 0:
        etype = cur.unpack("<I", f"array type of {key}")
        count = cur.unpack("<Q", f"array length of {key}")
        if etype in _SCALAR:
            size = struct.calcsize(_SCALAR[etype])
            raw = cur.take(count * size, f"array {key} ({count} items)")
            if count <= KEEP_ARRAY:
                return list(struct.unpack(f"<{count}{_SCALAR[etype][1]}", raw))
            return {"array_length": count}
        if etype == _STRING:
            if count * 8 > cur.size - cur.pos:
                raise FormatError(f"truncated or corrupt: array {key} claims {count} strings, more "
                                  "than the rest of the file holds",
                                  cur.src.name)
            items = [cur.string(f"item of {key}") for _ in range(count)]
            return items if count <= KEEP_ARRAY else {"array_length": count}
        raise FormatError(f"array {key} has unsupported item type {etype}", cur.src.name)
    raise FormatError(f"metadata {key} has unknown value type {vtype}", cur.src.name)


def parse_gguf(src: ByteSource, quant_sizes: dict[int, tuple[int, int]]) -> GGUFHeader:
    """Parse and validate the header; ``quant_sizes`` maps GGML type -> (block size, bytes)."""
    size = src.size()
    cur = _Cursor(src, size)
    if cur.take(4, "magic") != GGUF_MAGIC:
        raise FormatError("not a GGUF file (no GGUF magic)", src.name)
    version = cur.unpack("<I", "version")
    if version not in (2, 3):
        raise FormatError(f"unsupported GGUF version {version}", src.name)
    n_tensors = cur.unpack("<Q", "tensor count")
    n_kv = cur.unpack("<Q", "metadata count")
    # each metadata entry takes >= 13 bytes, each tensor info >= 28: bound the counts first
    if n_kv * 13 + n_tensors * 28 > size - 24:
        raise FormatError(
            f"corrupt header: {n_tensors} tensors and {n_kv} metadata entries cannot fit in "
            f"{size} bytes", src.name)
    meta: dict[str, Any] = {}
    for _ in range(n_kv):
        key = cur.string("metadata key")
        vtype = cur.unpack("<I", f"type of {key}")
        meta[key] = _value(cur, vtype, key)
    infos: list[tuple[str, tuple[int, ...], int, int]] = []
    for _ in range(n_tensors):
        name = cur.string("tensor name")
        n_dims = cur.unpack("<I", f"dimension count of {name}")
        if not 1 <= n_dims <= MAX_DIMS:
            raise FormatError(f"tensor {name} has {n_dims} dimensions", src.name)
        dims = struct.unpack(f"<{n_dims}Q", cur.take(8 * n_dims, f"dimensions of {name}"))
        gtype = cur.unpack("<I", f"type of {name}")
        offset = cur.unpack("<Q", f"offset of {name}")
        infos.append((name, tuple(reversed(dims)), gtype, offset))
    align = meta.get("general.alignment", 32)
    if not isinstance(align, int) or align <= 0 or align & (align - 1):
        raise FormatError(f"general.alignment {align!r} is not a power of two", src.name)
    data_start = -(-cur.pos // align) * align
    tensors: dict[str, GGUFTensor] = {}
    for name, shape, gtype, offset in infos:
        if gtype not in quant_sizes:
            raise FormatError(f"tensor {name} has unknown GGML type {gtype}", src.name)
        block, tsize = quant_sizes[gtype]
        numel = 1
        for d in shape:
            numel *= d
        if shape[-1] % block:
            raise FormatError(f"tensor {name}: row of {shape[-1]} is not a multiple of the "
                              f"block size {block}", src.name)
        nbytes = numel // block * tsize
        start = data_start + offset
        if offset % align or start + nbytes > size:
            raise FormatError(
                f"truncated or corrupt: tensor {name} at [{start}, {start + nbytes}) is outside "
                f"the {size}-byte file" if start + nbytes > size
                else f"tensor {name} offset {offset} is not aligned to {align}", src.name)
        if name in tensors:
            raise FormatError(f"tensor {name} appears twice", src.name)
        tensors[name] = GGUFTensor(name, shape, gtype, start, nbytes)
    _no_overlap(tensors, src.name)
    return GGUFHeader(version, meta, tensors, data_start)


def _no_overlap(tensors: dict[str, GGUFTensor], source: str) -> None:
    """Two tensors may not share bytes (the safetensors rule; a gain aliasing a matrix would be
    read as the matrix)."""
    end, prev = 0, ""
    for t in sorted(tensors.values(), key=lambda t: (t.start, t.start + t.nbytes)):
        if t.start < end and t.nbytes:
            raise FormatError(f"tensor {t.name} overlaps tensor {prev}", source)
        if t.nbytes:
            end, prev = max(end, t.start + t.nbytes), t.name

