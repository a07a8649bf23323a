"""The safetensors header: parsed and validated in pure Python, with no torch and no Rust reader.

Layout: u64 little-endian header length N, N bytes of UTF-8 JSON
``{name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {...}}``, then data.
A tensor's absolute offset is ``8 + N + begin``. Every field of every entry is checked against
the file size before it is trusted, so a hostile header can only produce a :class:`FormatError`.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, KeysView
from typing import Any, NamedTuple

from ckpt_audit.errors import FormatError
from ckpt_audit.readers.dtypes import BITS
from ckpt_audit.readers.safetensors_columns import (
    DTYPE_NAMES,
    CanonicalHeaders,
    Columns,
    from_parsed,
)
from ckpt_audit.storage.base import loads_json, loads_json_plain

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

    Parsing validates the whole file in one pass, as strictly as the reference ``safetensors``
    library (and stricter on duplicate keys, which it silently resolves to the last): every
    entry's dtype, shape and byte range, size = numel × bits / 8, the entries tiling the data
    section exactly (no gap, no overlap, no trailing byte) and ``__metadata__`` a str→str map.
    A file that library refuses is never audited. A :class:`TensorEntry` is built when its name
    is first looked up (an audit looks up a few hundred of 92k).
    """

    def __init__(self, lookup: dict[str, Any], columns: Columns | None,
                 metadata: dict[str, str], data_start: int, data_len: int, source: str) -> None:
        # name -> its row in ``columns`` (bulk-checked header), or its TensorEntry (strict path,
        # and once looked up)
        self._lookup = lookup
        self._columns = columns
        self.metadata = metadata
        self.data_start = data_start
        self.data_len = data_len
        self.source = source

    @property
    def names(self) -> list[str]:
        """Tensor names in header order."""
        return list(self._lookup)

    @property
    def raw_names(self) -> KeysView[str]:
        """Tensor names in header order, without a copy."""
        return self._lookup.keys()

    def __contains__(self, name: object) -> bool:
        return name in self._lookup

    def entry(self, name: str) -> TensorEntry:
        """The validated entry of ``name``, with absolute offsets."""
        e = self._lookup[name]
        if type(e) is int:
            c = self._columns
            assert c is not None
            e = TensorEntry(DTYPE_NAMES[c.dtypes[e]], tuple(c.shapes[e]),
                            self.data_start + int(c.begins[e]), self.data_start + int(c.ends[e]))
            self._lookup[name] = e
        return e  # type: ignore[no-any-return]

    @property
    def tensors(self) -> dict[str, TensorEntry]:
        """Every entry."""
        return {name: self.entry(name) for name in self._lookup}


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


def _utf8(raw: bytes, source: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _not_utf8(exc, source) from None


def _not_utf8(exc: UnicodeDecodeError, source: str) -> FormatError:
    return FormatError(f"header is not valid UTF-8 ({exc})", source)


def _json_object(raw: bytes, source: str) -> dict[str, Any]:
    _utf8(raw, source)
    obj: Any = loads_json(raw, source, "safetensors header")
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
    """Parse and validate the JSON header ``raw`` (the N bytes after the prefix) and the layout
    of the whole data section it describes.

    Design note: a DeepSeek-V3 checkpoint has 92k entries in 162 headers, and a Python call per
    entry (or per JSON object, to catch repeated keys) costs more than the parse itself. So a
    header laid out as the reference writer lays it out is proven valid from its text
    (:func:`~ckpt_audit.readers.safetensors_columns.from_canonical_text`), any other is parsed
    plainly and proven valid in bulk (``from_parsed``), and only a header that fails both goes
    through the strict parse and the entry-by-entry checks, which decide and word the refusal.
    All three accept exactly the same files (``tests/readers/test_safetensors_strict.py``
    cross-checks them)."""
    return parse_headers([(raw, file_size, source)])[0]


#: Header bytes parsed together at most (a budget: the raw bytes of canonical headers are kept
#: until their numbers are proven, in case one is refused and the strict path must word why).
BATCH_BYTES = 64 * 1024 * 1024


def parse_headers(headers: Iterable[tuple[bytes, int, str] | FormatError]
                  ) -> list[SafetensorsHeader]:
    """:func:`parse_header` of each ``(raw, file_size, source)``, taken one at a time so that a
    header is cut while its bytes are fresh; the numbers of canonical headers are proven
    together (``safetensors_columns.CanonicalHeaders``), in batches of at most
    :data:`BATCH_BYTES`. The first header, in order, that is refused raises its
    :class:`FormatError`, as parsing them one by one would: an item that is already a
    :class:`FormatError` (its file could not be read) in its turn, and when reading the next
    item fails (a remote error), the headers before it are checked first. Nothing is read past
    a header known to be refused."""
    done: list[SafetensorsHeader] = []
    batch = _Batch()
    items = iter(headers)
    while True:
        try:
            item = next(items, None)
        except Exception:
            done += batch.flush()  # a refusal before the failed read comes first
            raise
        if item is None:
            break
        if isinstance(item, FormatError):
            done += batch.flush()
            raise item
        raw, file_size, source = item
        try:  # the decoded text lives only while the header is cut
            kept = batch.add(raw, raw.decode("utf-8"), file_size, source)
        except UnicodeDecodeError as exc:
            done += batch.flush()
            raise _not_utf8(exc, source) from None
        if kept:
            if batch.size >= BATCH_BYTES:
                done += batch.flush()
        else:  # not canonical: parsed now, after the headers before it
            done += batch.flush()
            done.append(_parse_plainly(raw, 8 + len(raw), file_size - 8 - len(raw), source))
    return done + batch.flush()


class _Batch:
    """Canonical headers cut and kept until their numbers are proven together."""

    def __init__(self) -> None:
        self._canonical = CanonicalHeaders()
        self._kept: list[tuple[bytes, int, str]] = []
        self.size = 0

    def add(self, raw: bytes, text: str, file_size: int, source: str) -> bool:
        if not self._canonical.add(raw, text, file_size - 8 - len(raw)):
            return False
        self._kept.append((raw, file_size, source))
        self.size += len(raw)
        return True

    def flush(self) -> list[SafetensorsHeader]:
        """The kept headers, in order (one whose numbers fail goes through the plain and strict
        paths, which refuse it with the first problem); then nothing is kept."""
        out = []
        for (raw, file_size, source), found in zip(self._kept, self._canonical.finish(),
                                                   strict=True):
            data_start = 8 + len(raw)
            if found is None:
                out.append(_parse_plainly(raw, data_start, file_size - data_start, source))
            else:
                rows, meta, columns = found
                out.append(SafetensorsHeader(rows, columns, dict(meta or {}), data_start,
                                             file_size - data_start, source))
        self._kept, self.size = [], 0
        return out


def _parse_plainly(raw: bytes, data_start: int, data_len: int, source: str) -> SafetensorsHeader:
    """A header the canonical path declined: parsed plainly and checked in bulk, or else by the
    strict path, which refuses it with the first problem."""
    obj = loads_json_plain(raw)
    parsed = None
    if isinstance(obj, dict):
        top = len(obj)
        meta = obj.pop("__metadata__", None)
        parsed = from_parsed(obj, meta, top, raw, data_len)
    lookup: dict[str, Any]
    if parsed is not None and isinstance(obj, dict):
        lookup = dict(zip(obj, range(len(obj)), strict=True))
    else:
        obj, meta = parse_strictly(raw, data_len, source)
        lookup = {name: TensorEntry(e["dtype"], tuple(e["shape"]),
                                    data_start + e["data_offsets"][0],
                                    data_start + e["data_offsets"][1])
                  for name, e in obj.items()}
    return SafetensorsHeader(lookup, parsed, dict(meta or {}), data_start, data_len, source)


def parse_strictly(raw: bytes, data_len: int, source: str) -> tuple[dict[str, Any], Any]:
    """The strict path alone: the header parsed with every object checked for repeated keys,
    then each entry checked on its own and the tiling in offset order; the first problem is a
    :class:`FormatError`. Returns the entries and ``__metadata__``."""
    obj = _json_object(raw, source)
    meta = obj.pop("__metadata__", None)
    if meta is not None and not (type(meta) is dict
                                 and all(type(v) is str for v in meta.values())):
        raise FormatError("__metadata__ is not a map of strings to strings", source)
    entries = {name: _entry(name, e, data_len, source) for name, e in obj.items()}
    _check_tiling(entries, data_len, source)
    return obj, meta


#: One past the largest dimension the reference library reads (a Rust ``usize``).
_USIZE = 1 << 64


def _entry(name: str, entry: Any, data_len: int, source: str) -> TensorEntry:
    """One entry, checked alone (offsets relative to the data section)."""
    # Hot path (92k entries for DeepSeek-V3): exact type checks (``type(x) is int`` also
    # rejects bools) instead of isinstance/all() generators.
    if type(entry) is not dict:
        raise FormatError(f"tensor {name!r}: entry is not an object", source)
    dtype = entry.get("dtype")
    shape = entry.get("shape")
    offsets = entry.get("data_offsets")
    if type(dtype) is not str or dtype not in BITS:
        raise FormatError(f"tensor {name!r}: unknown dtype {dtype!r}", source)
    if type(shape) is not list:
        raise FormatError(f"tensor {name!r}: bad shape {shape!r}", source)
    numel = 1
    for s in shape:
        if type(s) is not int or not 0 <= s < _USIZE:  # the reference reads a usize
            raise FormatError(f"tensor {name!r}: bad shape {shape!r}", source)
        numel *= s
        # the reference multiplies left to right in a usize and refuses the first overflow,
        # even when a later dimension is 0 (stopping here also bounds the work: no huge ints)
        if numel >= _USIZE:
            raise FormatError(f"tensor {name!r}: the element count of shape {shape!r} "
                              "overflows 64 bits", source)
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
    bits = numel * BITS[dtype]
    if bits >= _USIZE:  # the reference's bit count is a usize too
        raise FormatError(f"tensor {name!r}: the bit count of shape {shape!r} of {dtype} "
                          "overflows 64 bits", source)
    if bits % 8 or end - begin != bits // 8:
        raise FormatError(
            f"tensor {name!r}: {end - begin} bytes for shape {shape} of {dtype}", source
        )
    return TensorEntry(dtype, tuple(shape), begin, end)


def _check_tiling(entries: dict[str, TensorEntry], data_len: int, source: str) -> None:
    """The entries, in offset order, must cover the data section exactly: each starts where
    the previous ends and the last ends at the end of the file (the reference library's rule)."""
    at = 0
    for name, e in sorted(entries.items(), key=lambda kv: (kv[1].start, kv[1].end)):
        if e.start != at:
            what = "overlaps the tensor before it" if e.start < at else \
                f"leaves bytes [{at}, {e.start}) of the data section uncovered"
            raise FormatError(f"tensor {name!r}: data_offsets [{e.start}, {e.end}] {what}",
                              source)
        at = e.end
    if at != data_len:
        raise FormatError(f"the tensors end at byte {at} of the data section, which has "
                          f"{data_len}: {data_len - at} bytes are not covered", source)
