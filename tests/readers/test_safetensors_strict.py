"""Fuzz: our verdict on a safetensors file (refuse or accept) agrees with the reference library.

Hypothesis writes headers that are mostly valid and then breaks one thing (unknown dtype,
negative or non-int shape, size mismatch, a gap, an overlap, trailing bytes, a bad
``__metadata__``, a bad length prefix). The reference verdict is ``safetensors.deserialize`` on
the same bytes (the Rust parser, no framework involved). ``CKPT_AUDIT_FUZZ=N`` runs N times as
many examples as the default.
"""

from __future__ import annotations

import json
import os
import struct
import time
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors import deserialize

from ckpt_audit.errors import FormatError
from ckpt_audit.readers import safetensors_columns, safetensors_format
from ckpt_audit.readers.safetensors_format import header_length, parse_header, parse_headers
from ckpt_audit.storage.base import loads_json_plain

SCALE = int(os.environ.get("CKPT_AUDIT_FUZZ", "1"))
BITS = {"F64": 64, "F32": 32, "F16": 16, "BF16": 16, "I64": 64, "I32": 32, "U8": 8, "BOOL": 8,
        "F8_E4M3": 8, "F8_E5M2": 8, "F4": 4, "F6_E2M3": 6, "C64": 64, "U16": 16}
BAD_DTYPES = ["F128", "f32", "", "I4", "F8_E4M3FN"]

entry = st.tuples(st.sampled_from(sorted(BITS)), st.lists(st.integers(0, 4), max_size=3))
mutation = st.sampled_from(["none", "none", "dtype", "neg", "float", "bool", "size", "gap",
                            "overlap", "trail", "meta_int", "meta_list", "meta_null",
                            "extra_field", "offsets3", "not_obj", "prefix"])


def build(specs: dict[str, tuple[str, list[int]]], mut: str, pick: int,
          compact: bool = False) -> bytes:
    """A file of ``specs`` with one thing broken (``mut``); ``compact``: the header laid out
    as the reference writer lays it out (``__metadata__`` first, no spaces: the canonical
    path's input), else as ``json.dumps`` writes it."""
    header: dict[str, Any] = {}
    at = 0
    for name, (dt, shape) in specs.items():
        n = 1
        for s in shape:
            n *= s
        size = (n * BITS[dt] + 7) // 8
        header[name] = {"dtype": dt, "shape": list(shape), "data_offsets": [at, at + size]}
        at += size
    data_len = at
    names = list(header)
    victim = header[names[pick % len(names)]] if names else None
    if victim is not None:
        if mut == "dtype":
            victim["dtype"] = BAD_DTYPES[pick % len(BAD_DTYPES)]
        elif mut == "neg":
            victim["shape"] = [-1, *victim["shape"]]
        elif mut == "float":
            victim["shape"] = [1.0, *victim["shape"]]
        elif mut == "bool":
            victim["shape"] = [True, *victim["shape"]]
        elif mut == "size":
            victim["data_offsets"][1] += 1
            data_len += 1
        elif mut == "gap":
            victim["data_offsets"] = [o + 1 for o in victim["data_offsets"]]
            data_len += 1
        elif mut == "overlap" and len(names) > 1:
            header[names[-1]]["data_offsets"] = list(header[names[0]]["data_offsets"])
        elif mut == "extra_field":
            victim["zzz"] = 1
        elif mut == "offsets3":
            victim["data_offsets"] = [*victim["data_offsets"], 0]
        elif mut == "not_obj":
            header[names[0]] = 1
    if mut == "trail":
        data_len += 1 + pick % 3
    if mut == "meta_int":
        header["__metadata__"] = {"format": 1}
    elif mut == "meta_list":
        header["__metadata__"] = ["x"]
    elif mut == "meta_null":
        header["__metadata__"] = None
    else:
        header["__metadata__"] = {"format": "pt"}
    if compact:
        header = {"__metadata__": header.pop("__metadata__"), **header}
        raw = json.dumps(header, separators=(",", ":")).encode()
    else:
        raw = json.dumps(header).encode()
    n = len(raw) + (1 if mut == "prefix" else 0)
    return struct.pack("<Q", n) + raw + b"\0" * data_len


def ours(blob: bytes) -> bool:
    try:
        n = header_length(blob[:8], len(blob), "x")
        parse_header(blob[8 : 8 + n], len(blob), "x")
    except FormatError:
        return False
    return True


def reference(blob: bytes) -> bool:
    try:
        deserialize(blob)
    except Exception:
        return False
    return True


@settings(max_examples=400 * SCALE, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.text("abcxyz.0123", min_size=1, max_size=8), entry, max_size=5),
       mutation, st.integers(0, 100))
def test_verdict_agrees_with_the_reference_library(specs: dict, mut: str, pick: int) -> None:
    blob = build(specs, mut, pick)
    t0 = time.monotonic()
    verdict = ours(blob)
    assert time.monotonic() - t0 < 5
    assert verdict == reference(blob), (mut, blob[:300])


def strict_only(blob: bytes) -> bool:
    """The verdict of the strict, entry-by-entry path alone."""
    try:
        n = header_length(blob[:8], len(blob), "x")
        safetensors_format.parse_strictly(blob[8 : 8 + n], len(blob) - 8 - n, "x")
    except FormatError:
        return False
    return True


def bulk(blob: bytes) -> bool:
    """Whether the bulk check alone would accept the header of ``blob``."""
    try:
        n = header_length(blob[:8], len(blob), "x")  # checked before either path runs
    except FormatError:
        return False
    raw = blob[8 : 8 + n]
    obj = loads_json_plain(raw)
    if type(obj) is not dict:
        return False
    top = len(obj)
    meta = obj.pop("__metadata__", None)
    return safetensors_columns.from_parsed(obj, meta, top, raw,
                                           len(blob) - 8 - len(raw)) is not None


@settings(max_examples=400 * SCALE, deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.text("abcxyz.0123:", min_size=1, max_size=8), entry, max_size=5),
       mutation, st.integers(0, 100))
def test_the_bulk_check_never_accepts_what_the_strict_path_refuses(
        specs: dict, mut: str, pick: int) -> None:
    blob = build(specs, mut, pick)
    strict = strict_only(blob)
    if bulk(blob):
        assert strict, (mut, blob[:300])
    if strict and mut not in ("extra_field", "prefix"):
        # the fast path is the one taken on every well-formed header (a colon in a name only
        # costs it the exact colon count)
        assert bulk(blob), (mut, blob[:300])
    assert ours(blob) == strict


@settings(max_examples=300 * SCALE, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_after_a_valid_prefix_never_escape_as_other_errors(tail: bytes) -> None:
    blob = struct.pack("<Q", len(tail)) + tail
    assert ours(blob) == reference(blob) or not ours(blob)


@pytest.mark.parametrize(("raw", "reference_keeps_one"), [
    (b'{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},'
     b'"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}', True),
    (b'{"a":{"dtype":"F32","dtype":"F32","shape":[1],"data_offsets":[0,4]}}', False),
    (b'{"__metadata__":{"k":"v","k":"w"},"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}',
     True),
    (b'{"__metadata__":{"k":"v"},"__metadata__":{"k":"v"},'
     b'"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}', False),
], ids=["entry", "field", "metadata-key", "metadata"])
def test_duplicate_keys_are_refused_though_the_reference_may_keep_the_last(
        raw: bytes, reference_keeps_one: bool) -> None:
    blob = struct.pack("<Q", len(raw)) + raw + b"\0" * 4
    assert reference(blob) == reference_keeps_one and not ours(blob)
    with pytest.raises(FormatError, match="appears twice"):
        parse_header(raw, len(blob), "x")


def test_a_colon_inside_a_name_or_metadata_keeps_the_fast_path_exact() -> None:
    raw = (b'{"__metadata__":{"a:b":"c:\\":d"},'
           b'"x:y":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}')
    blob = struct.pack("<Q", len(raw)) + raw + b"\0" * 4
    assert reference(blob) and ours(blob) and bulk(blob)


@pytest.mark.parametrize(("shape", "nbytes"), [
    ([2**32, 2**32], 0),  # the product wraps to 0 in int64: refused
    ([2**62, 4], 0),
    ([0, 2**62], 0),  # zero elements, whatever the other dimension
    ([0, 2**63 + 1], 0),  # past int64, within the reference's usize
    ([0, 2**64], 0),  # past usize: the reference cannot read the shape
    ([0, 10**30], 0),
    ([3, 0, 7], 0),
    ([], 4),
    # the reference multiplies left to right and refuses the first overflow, though a 0 follows
    ([2**32, 2**32, 0], 0),
    ([2**30, 2**30, 2**30, 0], 0),
    ([2**63, 2, 0], 0),
    ([0, 2**32, 2**32], 0),
    ([2**32, 2**31, 0], 0),
    ([2**60, 0], 0),
], ids=str)
def test_huge_dimensions_agree_with_the_reference_library(shape: list[int], nbytes: int) -> None:
    """Element counts past int64 never wrap into a size that matches (the bulk check bounds them
    in float64 first) and the verdict is the reference library's."""
    raw = json.dumps({"t": {"dtype": "F32", "shape": shape, "data_offsets": [0, nbytes]}})
    blob = struct.pack("<Q", len(raw)) + raw.encode() + b"\0" * nbytes
    assert ours(blob) == reference(blob) == strict_only(blob)
    assert not bulk(blob) or ours(blob)


# -- the canonical-text path (safetensors_columns.from_canonical_text) ---------------------------

def canonical_entries(blob: bytes) -> tuple[dict, dict] | None:
    """What the canonical-text path reads from ``blob``'s header, with absolute offsets; None
    when it declines."""
    n = header_length(blob[:8], len(blob), "x")
    raw = blob[8:8 + n]
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:  # refused before either path runs
        return None
    got = safetensors_columns.from_canonical_text(raw, text, len(blob) - 8 - n)
    if got is None:
        return None
    rows, meta, cols = got
    names = safetensors_columns.DTYPE_NAMES  # a dtype is kept as its code
    return ({name: (names[cols.dtypes[i]], tuple(cols.shapes[i]), int(cols.begins[i]),
                    int(cols.ends[i])) for name, i in rows.items()}, meta or {})


def strict_entries(blob: bytes) -> tuple[dict, dict] | None:
    """The strict path's reading of the same header (relative offsets); None when it refuses."""
    try:
        n = header_length(blob[:8], len(blob), "x")
        obj, meta = safetensors_format.parse_strictly(blob[8:8 + n], len(blob) - 8 - n, "x")
    except FormatError:
        return None
    return ({name: (e["dtype"], tuple(e["shape"]), *e["data_offsets"])
             for name, e in obj.items()}, meta or {})


def written_by_the_reference(specs: dict[str, tuple[str, list[int]]],
                             meta: dict[str, str] | None) -> bytes:
    """A file as the Rust writer lays it out (``safetensors.numpy.save``)."""
    import numpy as np
    from safetensors.numpy import save

    np_dtypes = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "I64": "<i8", "I32": "<i4",
                 "U8": "u1", "U16": "<u2", "BOOL": "?"}
    return save({name: np.zeros(shape, np_dtypes[dt]) for name, (dt, shape) in specs.items()},
                metadata=meta)


WRITABLE = ["F64", "F32", "F16", "I64", "I32", "U8", "U16", "BOOL"]
names = st.text(st.characters(min_codepoint=32, max_codepoint=0x2FF, exclude_characters='"\\'),
                min_size=1, max_size=10)


@settings(max_examples=200 * SCALE, deadline=None)
@given(st.dictionaries(names, st.tuples(st.sampled_from(WRITABLE),
                                        st.lists(st.integers(0, 5), max_size=3)),
                       min_size=1, max_size=6),
       st.none() | st.dictionaries(names, names, max_size=3))
def test_the_canonical_path_reads_what_the_reference_writer_writes(specs: dict,
                                                                   meta: dict | None) -> None:
    blob = written_by_the_reference(specs, meta)
    fast, strict = canonical_entries(blob), strict_entries(blob)
    assert strict is not None and reference(blob)
    assert fast == strict, blob[:300]  # taken on every file the writer writes, and exact


#: Edits a hostile or hand-made header may carry; each may move it off the canonical layout.
EDITS = [b" ", b"\n", b"\t", b"\\", b'\\"', b"\\u0041", b"0", b"00", b"-", b"+", b"e1", b".0",
         b",", b":", b"[", b"]", b"{", b"}", b'"', b"\x01", b"\x7f", b"1" * 19, b"__metadata__",
         b'"dtype":"F32",', b"\xc3\xa9"]


@settings(max_examples=600 * SCALE, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.text("abc.0123:{}[],", min_size=1, max_size=6),
                       st.tuples(st.sampled_from(WRITABLE), st.lists(st.integers(0, 4),
                                                                     max_size=3)),
                       min_size=1, max_size=4),
       st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 2), st.sampled_from(EDITS)),
                min_size=1, max_size=3))
def test_the_canonical_path_never_reads_an_edited_header_otherwise(specs: dict,
                                                                  edits: list) -> None:
    """Insert, replace or delete at random places of a canonical header: whatever the
    canonical path accepts, the strict parse accepts and reads exactly the same way."""
    blob = bytearray(written_by_the_reference(specs, {"format": "pt"}))
    n = int.from_bytes(blob[:8], "little")
    header, data = bytearray(blob[8:8 + n]), blob[8 + n:]
    for at, how, text in edits:
        at %= len(header)
        if how == 0:
            header[at:at] = text
        elif how == 1:
            header[at:at + len(text)] = text
        else:
            del header[at:at + len(text)]
    edited = struct.pack("<Q", len(header)) + bytes(header) + bytes(data)
    try:
        fast = canonical_entries(edited)
    except FormatError:  # the length prefix itself (checked before either path)
        return
    if fast is not None:
        assert fast == strict_entries(edited), bytes(header)


@pytest.mark.parametrize("header", [
    b'{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},'
    b'"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}',  # a repeated name
    b'{"__metadata__":{"k":"v","k":"w"},"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}',
    b'{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"__metadata__":{}}',  # not first
    b'{"a":{"dtype":"F32","shape":[01],"data_offsets":[0,4]}}',  # a leading zero
    b'{"a":{"dtype":"F32","shape":[1],"data_offsets":[00,4]}}',
    b'{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,04]}}',
    b'{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4.0]}}',
    b'{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4,4]}}',
    b'{"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}}',
    b'{"a\x01":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}',  # a raw control character
    b'{"a\\u0062":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}',  # an escape: json's call
    b'{"a":{"shape":[1],"dtype":"F32","data_offsets":[0,4]}}',  # another key order
    b'{"a": {"dtype":"F32","shape":[1],"data_offsets":[0,4]}}',  # whitespace inside
    b'{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}}',
    b'{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}} x',
    b'{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}',
    # each of these would tile 8 bytes if read as it looks
    b'{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},'
    b'"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}',
    b'{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},'
    b'"__metadata__":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}',
    b'{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},'
    b'"b":{"dtype":"F32","shape":[1],"data_offsets":[4,18446744073709551624]}}',
], ids=lambda h: h.decode("latin-1")[:40])
def test_the_canonical_path_declines_what_it_does_not_prove(header: bytes) -> None:
    blob = struct.pack("<Q", len(header)) + header + b"\0" * (8 if b"[4," in header else 4)
    assert canonical_entries(blob) is None
    assert ours(blob) == (strict_entries(blob) is not None)


def test_trailing_whitespace_and_an_empty_metadata_keep_the_canonical_path() -> None:
    header = b'{"__metadata__":{},"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}} \n\t'
    blob = struct.pack("<Q", len(header)) + header + b"\0" * 4
    assert canonical_entries(blob) == ({"a": ("F32", (1,), 0, 4)}, {}) == strict_entries(blob)


def test_every_cut_of_a_canonical_header_is_read_or_refused_never_a_crash() -> None:
    """Each prefix of a header the reference writer wrote (a file cut anywhere in its header):
    a FormatError or a reading, nothing else (an IndexError here once escaped as exit 3)."""
    blob = written_by_the_reference({"a.norm.weight": ("F32", [2]), "b": ("BOOL", [])},
                                    {"format": "pt"})
    n = int.from_bytes(blob[:8], "little")
    for cut in range(1, n + 1):
        header = blob[8:8 + cut]
        try:
            parse_header(header, 8 + cut + 9, "x")
        except FormatError:
            pass
        canonical_entries(struct.pack("<Q", cut) + header + b"\0" * 9)


CANONICAL_BITS = ['{"', '__metadata__', '":{', '"format":"pt"', '},', '"a":{', '"dtype":"',
                  'F32', 'BOOL', '","shape":[', '1', '2', '0', ',', '],"data_offsets":[',
                  '0,4', '4,8', ']}', '}', ']', '"', ':', '{', '[', ' ', '\n']


@settings(max_examples=1500 * SCALE, deadline=None)
@given(st.lists(st.sampled_from(CANONICAL_BITS), max_size=40), st.integers(0, 16))
def test_the_canonical_path_never_raises_on_any_text(bits: list[str], data_len: int) -> None:
    """Texts built from the canonical layout's own pieces, in any order: the canonical path
    returns a reading or declines, and what it reads the strict path reads the same."""
    text = "".join(bits)
    try:
        got = safetensors_columns.from_canonical_text(text.encode(), text, data_len)
    except Exception as exc:  # noqa: BLE001 - the point of the test
        raise AssertionError(f"{type(exc).__name__} on {text!r}") from exc
    if got is not None:
        blob = struct.pack("<Q", len(text.encode())) + text.encode() + b"\0" * data_len
        assert canonical_entries(blob) == strict_entries(blob), text


def test_a_shape_of_many_huge_dimensions_is_refused_at_once() -> None:
    """80,000 dimensions of 10**18 - 1 (a 1.5 MB header): the running product stops at the first
    overflow; it used to grow a huge integer for 17 s."""
    raw = (b'{"a":{"dtype":"F32","shape":[' + b",".join([b"999999999999999999"] * 80_000)
           + b'],"data_offsets":[0,8]}}')
    blob = struct.pack("<Q", len(raw)) + raw + b"\0" * 8
    t0 = time.monotonic()
    assert not ours(blob) and not reference(blob)
    assert time.monotonic() - t0 < 2


@pytest.mark.parametrize("dtype", ["F32", "F4"])
def test_an_overflow_before_a_zero_dimension_is_refused_on_every_path(dtype: str) -> None:
    for layout in ('{"a":{"dtype":"%s","shape":[4294967296,4294967296,0],"data_offsets":[0,0]}}',
                   '{"a": {"dtype": "%s", "shape": [4294967296, 4294967296, 0], '
                   '"data_offsets": [0, 0]}}'):
        raw = (layout % dtype).encode()
        blob = struct.pack("<Q", len(raw)) + raw
        assert not reference(blob) and not ours(blob) and not strict_only(blob)
        assert not bulk(blob) and canonical_entries(blob) is None


def _items(blobs: list[bytes]) -> list[tuple[bytes, int, str] | FormatError]:
    items: list[tuple[bytes, int, str] | FormatError] = []
    for i, blob in enumerate(blobs):
        try:
            n = header_length(blob[:8], len(blob), f"f{i}")
            items.append((blob[8 : 8 + n], len(blob), f"f{i}"))
        except FormatError as exc:
            items.append(exc)
    return items


@settings(max_examples=300 * SCALE, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.dictionaries(st.text("abcxyz.0123", min_size=1, max_size=8), entry,
                                          max_size=5),
                          mutation, st.integers(0, 100), st.booleans()),
                min_size=1, max_size=4))
def test_headers_parsed_together_are_parsed_as_one_by_one(cases: list) -> None:
    """``parse_headers`` (the readers' path: canonical headers' offsets proven together) takes
    exactly the headers that ``parse_header`` takes one by one, with the same entries, and
    refuses with the first refusal in order."""
    items = _items([build(specs, mut, pick, compact) for specs, mut, pick, compact in cases])
    singles, first_error = [], None
    for item in items:
        try:
            if isinstance(item, FormatError):
                raise item
            singles.append(parse_header(*item))
        except FormatError as exc:
            first_error = exc
            break
    try:
        together = parse_headers(items)
    except FormatError as exc:
        assert first_error is not None and str(exc) == str(first_error)
    else:
        assert first_error is None
        for a, b in zip(together, singles, strict=True):
            assert a.tensors == b.tensors and a.metadata == b.metadata
            assert (a.data_start, a.data_len) == (b.data_start, b.data_len)


def test_canonical_headers_have_their_offsets_proven_in_one_pass(monkeypatch) -> None:
    calls, plain = [], []
    real_offsets, real_plain = safetensors_columns._offsets, safetensors_format._parse_plainly
    monkeypatch.setattr(safetensors_columns, "_offsets",
                        lambda data, lens: calls.append(lens.size) or real_offsets(data, lens))
    monkeypatch.setattr(safetensors_format, "_parse_plainly",
                        lambda *a: plain.append(a[-1]) or real_plain(*a))
    same = ("F32", [2])  # two headers alike but for their entries' order: offsets swapped
    blobs = [build({"a": same, "b": same}, "none", 0, compact=True),
             build({"b": same, "a": same}, "none", 0, compact=True),
             build({"x.norm.weight": ("BF16", [4]), "y": ("I64", [3, 1]), "z": ("U8", [])},
                   "none", 0, compact=True)]
    headers = parse_headers(_items(blobs))
    assert calls == [7] and plain == []  # one proof for all, no header left to another path
    for i, (blob, hdr) in enumerate(zip(blobs, headers, strict=True)):
        n = struct.unpack("<Q", blob[:8])[0]
        alone = parse_header(blob[8 : 8 + n], len(blob), f"f{i}")
        truth = {k: (v["dtype"], tuple(v["shape"]), 8 + n + v["data_offsets"][0],
                     8 + n + v["data_offsets"][1])
                 for k, v in json.loads(blob[8 : 8 + n]).items() if k != "__metadata__"}
        assert {k: tuple(e) for k, e in hdr.tensors.items()} == truth
        assert hdr.tensors == alone.tensors
    # one bad entry anywhere: each header proven alone, the bad one refused in its turn
    calls.clear()
    good = blobs[1]
    n = struct.unpack("<Q", good[:8])[0]
    raw = good[8 : 8 + n].replace(b'"data_offsets":[0,', b'"data_offsets":[00,', 1)
    bad = struct.pack("<Q", len(raw)) + raw + good[8 + n:]  # a leading zero: not JSON
    with pytest.raises(FormatError, match="f1"):
        parse_headers(_items([blobs[0], bad, blobs[2]]))
    assert calls == [7, 2, 2, 3]
