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
from ckpt_audit.readers import safetensors_format
from ckpt_audit.readers.safetensors_format import header_length, parse_header
from ckpt_audit.storage.base import loads_json_plain

SCALE = int(os.environ.get("CKPT_AUDIT_FUZZ", "1"))
BITS = {"F64": 64, "F32": 32, "F16": 16, "BF16": 16, "I64": 64, "I32": 32, "U8": 8, "BOOL": 8,
        "F8_E4M3": 8, "F8_E5M2": 8, "F4": 4, "F6_E2M3": 6, "C64": 64, "U16": 16}
BAD_DTYPES = ["F128", "f32", "", "I4", "F8_E4M3FN"]

entry = st.tuples(st.sampled_from(sorted(BITS)), st.lists(st.integers(0, 4), max_size=3))
mutation = st.sampled_from(["none", "none", "dtype", "neg", "float", "bool", "size", "gap",
                            "overlap", "trail", "meta_int", "meta_list", "meta_null",
                            "extra_field", "offsets3", "not_obj", "prefix"])


def build(specs: dict[str, tuple[str, list[int]]], mut: str, pick: int) -> bytes:
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
    return safetensors_format._valid_in_bulk(obj, meta, top, raw,
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
], ids=str)
def test_huge_dimensions_agree_with_the_reference_library(shape: list[int], nbytes: int) -> None:
    """Element counts past int64 never wrap into a size that matches (the bulk check bounds them
    in float64 first) and the verdict is the reference library's."""
    raw = json.dumps({"t": {"dtype": "F32", "shape": shape, "data_offsets": [0, nbytes]}})
    blob = struct.pack("<Q", len(raw)) + raw.encode() + b"\0" * nbytes
    assert ours(blob) == reference(blob) == strict_only(blob)
    assert not bulk(blob) or ours(blob)
