"""A safetensors header's entries proven valid as columns, with no Python call per entry.

Design note. A DeepSeek-V3 checkpoint has 92k header entries in 162 files, and a Python call per
entry costs more than reading the whole file's header. Two ways in, each ending in the same
numeric checks (:func:`_sizes_tile`), and each allowed to say ``None``: the caller then takes the
next way, and last the strict, entry-by-entry path (``safetensors_format.parse_strictly``), which
decides and words every refusal. So a fast path can only decline, never change a verdict.

1. :func:`from_canonical_text`: the text exactly as the reference (Rust) writer lays it out,
   compact, ``__metadata__`` first, each entry's keys in the order ``dtype``, ``shape``,
   ``data_offsets``, with no backslash anywhere. Then every ``"`` delimits a string, so the text
   cut at its quotes alternates structure and string bodies, and each entry is the same ten
   pieces: ``NAME``, ``:{``, ``dtype``, ``:``, DTYPE, ``,``, ``shape``, ``:[DIMS],``,
   ``data_offsets``, ``:[BEGIN,END]},``. Every structural piece is compared with what it must be
   (``list.count`` on a slice), shapes are parsed once per distinct shape (a checkpoint repeats
   a few dozen), and the offsets are proven byte by byte with numpy. Nothing this path accepts
   is read differently by ``json.loads``: no escapes, no control characters (so every string
   body is the string), JSON integers without sign, leading zero or exponent, keys unique
   (counted). A reader parses all its shards' headers this way together
   (:class:`CanonicalHeaders`, through ``safetensors_format.parse_headers``): the same checks,
   the numeric ones made once for all of them.
2. :func:`from_parsed`: any other header, after one plain ``json.loads``: C-level passes (``map``,
   ``set``, ``array``, numpy) over all entries at once, and a colon count proving that no key
   repeated (``storage.base.no_repeated_keys``).
"""

from __future__ import annotations

import operator
import re
from array import array
from itertools import chain
from typing import Any, NamedTuple

import numpy as np

from ckpt_audit.readers.dtypes import BITS
from ckpt_audit.storage.base import has_byte_below, no_repeated_keys


class Columns(NamedTuple):
    """A checked header's entries, row ``i`` for the ``i``-th name, offsets relative to the data
    section: the ~570 small dicts per shard of a parsed header are dropped as soon as checked."""

    dtypes: np.ndarray  # each a code: its name is ``DTYPE_NAMES[code]``
    shapes: list[Any]  # each a tuple, or a list (from a parsed header), of ints
    begins: np.ndarray
    ends: np.ndarray


#: Numbers the bulk checks trust int64 with. A valid entry's element count is at most 2 × the
#: data length (4 bits the narrowest dtype), so below 2**53 bytes it is under 2**54; products
#: are bounded at 2**55 (in float64 first on the parsed path, with room for its rounding), so
#: numel × bits (64 at most) and size × 8 stay below 2**62.
MAX_DATA = 1 << 53
MAX_NUMEL = 1 << 55


#: Every dtype name a header may hold, by its code in :attr:`Columns.dtypes` (a byte per entry
#: instead of a string object: 92k of them for DeepSeek-V3), and the bits of each code.
DTYPE_NAMES: tuple[str, ...] = tuple(BITS)
_CODE = {name: code for code, name in enumerate(DTYPE_NAMES)}
_BITS_OF_CODE = np.array([BITS[name] for name in DTYPE_NAMES], np.int64)


def _codes(dtypes: list[str]) -> np.ndarray | None:
    """The codes of ``dtypes``, or ``None`` when one is not a dtype name."""
    if not set(dtypes) <= _CODE.keys():
        return None
    return np.fromiter(map(_CODE.__getitem__, dtypes), np.uint8, len(dtypes))


def _sizes_tile(numel: np.ndarray, dtypes: np.ndarray, begins: np.ndarray, ends: np.ndarray,
                data_len: int) -> bool:
    """Every entry's byte size is numel × bits / 8 (whole bytes) and the entries tile the data
    section exactly: in (begin, end) order each starts where the one before ends, from 0 to
    ``data_len``. Writers list entries in offset order, where that order is the header's own;
    only a header listed otherwise is sorted."""
    sizes = ends - begins
    if begins.min() < 0 or ends.max() > data_len or sizes.min() < 0:
        return False
    bits = _BITS_OF_CODE[dtypes]
    if not np.array_equal(numel * bits, sizes * 8):  # bits % 8 == 0 and size == bits / 8
        return False
    b, e = begins, ends
    if not (b[0] == 0 and np.array_equal(b[1:], e[:-1])):
        order = np.lexsort((e, b))
        b, e = b[order], e[order]
        if not (b[0] == 0 and np.array_equal(b[1:], e[:-1])):
            return False
    return bool(e[-1] == data_len)


# -- 1. the canonical text -----------------------------------------------------------------------

#: The ten pieces of an entry, cut at its quotes: (offset in the entry, what it must be); the
#: name (0), dtype (4), shape (7) and offsets (9) are checked on their own.
_FIXED = ((1, ":{"), (2, "dtype"), (3, ":"), (5, ","), (6, "shape"), (8, "data_offsets"))
_PIECES = 10
_INT = r"(?:0|[1-9][0-9]{0,17})"  # a JSON integer that int64 holds: no sign, no leading zero
_SHAPE = re.compile(rf":\[({_INT}(?:,{_INT})*)?\],")
_OFFSET_MARKS = bytes.maketrans(b":[]},", b"     ")
_JSON_SPACE = " \t\n\r"
_JSON_SPACE_BYTES = _JSON_SPACE.encode()


def from_canonical_text(raw: bytes, text: str, data_len: int
                        ) -> tuple[dict[str, int], dict[str, str] | None, Columns] | None:
    """Each name's row, the ``__metadata__`` and the columns of the header ``raw`` (``text``
    its UTF-8 decoding), when it is laid out as the reference writer lays it out and passes
    every check; else ``None`` (see the module's design note)."""
    found = CanonicalHeaders()
    return found.finish()[0] if found.add(raw, text, data_len) else None


#: Shapes parsed so far: each ``:[d,d],`` piece's dimensions and element count.
_Known = tuple[dict[str, tuple[int, ...]], dict[str, int]]


class _Cut(NamedTuple):
    """A canonical header cut at its quotes: all but its offsets checked, kept compact (the
    text's ~5,700 pieces are dropped as soon as it is cut)."""

    rows: dict[str, int]
    meta: dict[str, str] | None
    dtypes: np.ndarray
    dims: list[tuple[int, ...]]
    numel: np.ndarray
    offsets: bytes  # every entry's ``:[b,e]},`` (the last one's end made like the others')
    lens: np.ndarray  # the length of each of those
    data_len: int


class CanonicalHeaders:
    """:func:`from_canonical_text` of many headers, each cut as it is read (``add``), with the
    same results (``finish``, in the order kept), the numbers of all of them proven in one
    numpy pass.

    Design note: a DeepSeek-V3 header has ~570 entries, and proving its offsets takes ~25 numpy
    calls, so per-call overhead, not the bytes, was most of their cost (~40 ms over 162
    headers). Each header is cut, and its dtypes and shapes checked, as it is added (shapes
    parsed once per distinct shape in the whole batch); the offsets' proof is of each entry on
    its own, so it is made once over all the entries, and so are the sizes and, for headers
    listed in offset order, the tiling (each header on its own span). When any of these fails,
    each header is checked alone, exactly as one header is: a batch changes how fast the answer
    comes, never which header is accepted.
    """

    def __init__(self) -> None:
        self._cuts: list[_Cut] = []
        self._shapes: _Known = ({}, {})

    def add(self, raw: bytes, text: str, data_len: int) -> bool:
        """Cut one header and keep it for :meth:`finish`; False (nothing kept) when it is not
        laid out canonically."""
        cut = _cut(raw, text, data_len, self._shapes)
        if cut is not None:
            self._cuts.append(cut)
        return cut is not None

    def finish(self) -> list[tuple[dict[str, int], dict[str, str] | None, Columns] | None]:
        """Each kept header's rows, ``__metadata__`` and columns, or ``None`` where a number
        check failed; then nothing is kept."""
        live, self._cuts = self._cuts, []
        together = _offsets(b"".join(c.offsets for c in live),
                            np.concatenate([c.lens for c in live])) if len(live) > 1 else None
        pairs: list[tuple[np.ndarray, np.ndarray] | None]
        tiled = False
        if together is not None:
            bounds = np.cumsum([0, *(c.lens.size for c in live)])
            begins, ends = together
            tiled = _all_tile(live, bounds, begins, ends)
            edges = bounds.tolist()
            pairs = [(begins[a:b], ends[a:b]) for a, b in zip(edges, edges[1:], strict=False)]
        else:  # one header, or one entry failed somewhere: each header alone
            pairs = [_offsets(c.offsets, c.lens) for c in live]
        out: list[tuple[dict[str, int], dict[str, str] | None, Columns] | None] = []
        for cut, pair in zip(live, pairs, strict=True):
            if pair is None or not (tiled or _sizes_tile(cut.numel, cut.dtypes, *pair,
                                                         cut.data_len)):
                out.append(None)
            else:
                out.append((cut.rows, cut.meta, Columns(cut.dtypes, cut.dims, *pair)))
        return out


def _all_tile(cuts: list[_Cut], bounds: np.ndarray, begins: np.ndarray, ends: np.ndarray
              ) -> bool:
    """:func:`_sizes_tile` of every cut header at once (``bounds``: where each one's entries
    start and end in ``begins`` and ``ends``), for headers listed in offset order, as writers
    list them; ``False`` when any check fails or any header is listed otherwise (each header
    is then checked alone)."""
    first, last = bounds[:-1], bounds[1:] - 1
    data_lens = np.array([c.data_len for c in cuts], np.int64)
    numel = np.concatenate([c.numel for c in cuts])
    bits = _BITS_OF_CODE[np.concatenate([c.dtypes for c in cuts])]
    sizes = ends - begins
    if sizes.min() < 0 or not np.array_equal(numel * bits, sizes * 8):
        return False
    # in offset order: each header starts at 0, each entry where the one before it ends, and
    # each header's last entry ends its data section (which bounds every end: all begins >= 0)
    joins = begins[1:] == ends[:-1]
    joins[first[1:] - 1] = True  # a header's first entry follows another header's last
    return bool((begins[first] == 0).all() and joins.all()
                and np.array_equal(ends[last], data_lens))


def _cut(raw: bytes, text: str, data_len: int, known: _Known) -> _Cut | None:
    """The header cut at its quotes with every structural piece, dtype and shape checked, or
    ``None``. ``known``: shapes parsed so far (added to)."""
    if b"\\" in raw or data_len >= MAX_DATA or not raw.startswith(b'{"'):
        return None
    # no control character in a string (raw ones are not JSON): the canonical layout has none
    # outside them either, but for the padding at the end (JSON whitespace)
    if has_byte_below(raw, 0x20, len(raw.rstrip(_JSON_SPACE_BYTES))):
        return None
    tok = text.split('"')
    meta, first = _metadata(tok)
    n, rest = divmod(len(tok) - first, _PIECES)
    if first < 0 or rest or not n:
        return None
    for at, want in _FIXED:
        if tok[first + at::_PIECES].count(want) != n:
            return None
    names = tok[first::_PIECES]
    rows = dict(zip(names, range(n), strict=True))
    if len(rows) != n or "__metadata__" in rows:  # a name repeated, or a second metadata
        return None
    dtypes = _codes(tok[first + 4::_PIECES])
    shapes = _shapes(tok[first + 7::_PIECES], known)
    if dtypes is None or shapes is None:
        return None
    pieces = tok[first + 9::_PIECES]
    last = pieces[-1].rstrip(_JSON_SPACE)
    if not last.endswith("}}"):
        return None
    pieces[-1] = last[:-1] + ","
    joined = "".join(pieces)
    if not joined.isascii():
        return None
    lens = np.fromiter(map(len, pieces), np.int64, n)
    return _Cut(rows, meta, dtypes, *shapes, joined.encode("ascii"), lens, data_len)


def _metadata(tok: list[str]) -> tuple[dict[str, str] | None, int]:
    """``__metadata__`` (if it comes first) and where the entries start among the pieces; -1
    for a layout this path does not take."""
    if tok[1] != "__metadata__":
        return None, 1
    if len(tok) < 3:
        return {}, -1
    if tok[2] == ":{},":
        return {}, 3
    if tok[2] != ":{":
        return {}, -1
    meta: dict[str, str] = {}
    at = 3
    while at + 3 < len(tok):  # one Python step per key: a writer puts a handful there
        key, colon, value, after = tok[at:at + 4]
        if colon != ":" or key in meta:
            return meta, -1
        meta[key] = value
        at += 4
        if after == "},":
            return meta, at
        if after != ",":
            return meta, -1
    return meta, -1


def _bounded_product(dims: tuple[int, ...] | list[int]) -> int | None:
    """The product of ``dims`` taken left to right, or ``None`` once a partial product passes
    :data:`MAX_NUMEL`: the reference library refuses a shape whose running product overflows
    even when a later dimension is 0, so the final product alone cannot decide (the strict path
    then does), and stopping early keeps a hostile shape from growing a huge integer."""
    count = 1
    for d in dims:
        count *= d
        if count > MAX_NUMEL:
            return None
    return count


def _shapes(pieces: list[str], known: _Known | None = None
            ) -> tuple[list[tuple[int, ...]], np.ndarray] | None:
    """Each entry's shape (``:[d,d],`` pieces) and element count, parsed once per distinct
    shape (``known``: those parsed before, added to)."""
    dims_of, numel_of = ({}, {}) if known is None else known
    for piece in set(pieces) - dims_of.keys():
        m = _SHAPE.fullmatch(piece)
        if m is None:
            return None
        dims = tuple(map(int, m.group(1).split(","))) if m.group(1) else ()
        count = _bounded_product(dims)
        if count is None:
            return None
        dims_of[piece], numel_of[piece] = dims, count
    numel = np.fromiter(map(numel_of.__getitem__, pieces), np.int64, len(pieces))
    return list(map(dims_of.__getitem__, pieces)), numel


def _offsets(data: bytes, lens: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """Begins and ends from the ``:[b,e]},`` pieces joined in ``data`` (``lens``: their lengths;
    a header's last, ``:[b,e]}}`` and the writer's padding, made like the others by
    :func:`_cut`), proven byte by byte with numpy: the marks at each piece's fixed places,
    exactly one more comma per piece with a digit on each side, digits everywhere else, each
    number 1 to 18 digits without a leading zero."""
    n = lens.size
    raw = np.frombuffer(data, np.uint8)
    if lens.min() < 8:  # ":[0,0]}," is the shortest
        return None
    ends = np.cumsum(lens)
    starts = ends - lens
    for at, mark in ((starts, b":"), (starts + 1, b"["), (ends - 3, b"]"), (ends - 2, b"}"),
                     (ends - 1, b",")):
        if not (raw[at] == ord(mark)).all():
            return None
    digit = (raw >= ord("0")) & (raw <= ord("9"))
    comma = np.flatnonzero(raw == ord(","))
    # 5 marks per piece above; all else digits but one comma: 2 commas a piece, the first inner
    if comma.size != 2 * n or int(digit.sum()) != raw.size - 6 * n \
            or not (comma[1::2] == ends - 1).all():
        return None
    inner = comma[0::2]
    first, second = inner - starts - 2, ends - 4 - inner  # digits of the begin and of the end
    if first.min() < 1 or second.min() < 1 or first.max() > 18 or second.max() > 18:
        return None
    if ((raw[starts + 2] == ord("0")) & (first > 1)).any() \
            or ((raw[inner + 1] == ord("0")) & (second > 1)).any():
        return None
    values = np.fromstring(data.translate(_OFFSET_MARKS), dtype=np.int64, sep=" ")
    if values.size != 2 * n:
        return None
    return values[0::2], values[1::2]


# -- 2. a plainly parsed header ------------------------------------------------------------------

_DTYPE = operator.itemgetter("dtype")
_SHAPE_OF = operator.itemgetter("shape")
_OFFSETS = operator.itemgetter("data_offsets")


def from_parsed(obj: dict[str, Any], meta: Any, top: int, raw: bytes,
                data_len: int) -> Columns | None:
    """The entries of the plainly parsed header ``obj`` (``__metadata__`` popped into ``meta``;
    ``top`` keys before that) as columns, when they pass every check of the strict path; else
    ``None``.

    Repeated keys and the depth budget are proven, not scanned for: every entry has exactly the
    three keys and ``__metadata__`` only strings, so the document nests three deep at most, and
    if the colons outside strings (one per key) equal the keys the parse kept, no key repeated."""
    if meta is not None and not (type(meta) is dict and set(map(type, meta.values())) <= {str}):
        return None
    vals = list(obj.values())
    if not vals:
        empty = np.zeros(0, np.int64)
        ok = data_len == 0 and no_repeated_keys(raw, top + len(meta or ()))
        return Columns(np.zeros(0, np.uint8), [], empty, empty) if ok else None
    if set(map(type, vals)) != {dict} or set(map(len, vals)) != {3} or data_len >= MAX_DATA:
        return None
    try:
        dtypes = _codes(list(map(_DTYPE, vals)))  # None unless every dtype is a dtype name
        shapes = list(map(_SHAPE_OF, vals))
        offsets = list(map(_OFFSETS, vals))
        if dtypes is None:
            return None
    except (KeyError, TypeError):  # a key missing, an unhashable dtype
        return None
    if set(map(type, chain(shapes, offsets))) != {list} or set(map(len, offsets)) != {2}:
        return None
    dims_list = list(chain.from_iterable(shapes))
    offs_list = list(chain.from_iterable(offsets))
    # exact types: ``type(x) is int`` also rejects bools, as the strict path does
    if set(map(type, chain(dims_list, offs_list))) - {int}:
        return None
    try:  # ``array`` refuses ints past int64
        dims = np.frombuffer(array("q", dims_list), np.int64)
        offs = np.frombuffer(array("q", offs_list), np.int64)
    except OverflowError:
        return None
    if dims.size and dims.min() < 0:
        return None
    # element counts: the product of each shape's dims (float64 first, to keep int64 exact)
    ranks = np.fromiter(map(len, shapes), np.int64, len(shapes))
    starts = np.cumsum(ranks) - ranks
    ext = np.append(dims, 1)  # a start past the last dim (trailing rank-0 entries) stays valid
    ranked = ranks > 0
    with np.errstate(over="ignore", invalid="ignore"):  # inf (and inf × 0) only decline
        bound = np.multiply.reduceat(ext.astype(np.float64), starts)[ranked]
    if not (bound <= MAX_NUMEL).all():
        return None
    numel = np.where(ranked, np.multiply.reduceat(ext, starts), 1)
    # a 0 after dimensions whose product overflows: refused by the reference, 0 here (rare:
    # only shapes holding a 0 are looked at, one Python step per dimension)
    for row in np.flatnonzero(ranked & (numel == 0)).tolist():
        if _bounded_product(shapes[row]) is None:
            return None
    begins, ends = offs[0::2], offs[1::2]
    if not _sizes_tile(numel, dtypes, begins, ends, data_len) \
            or not no_repeated_keys(raw, top + 3 * len(vals) + len(meta or ())):
        return None
    return Columns(dtypes, shapes, begins, ends)
