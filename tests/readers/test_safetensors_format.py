"""Property tests of the safetensors header parser against the official library."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import save as st_save

from ckpt_audit.errors import FormatError
from ckpt_audit.readers.safetensors_format import MAX_HEADER, header_length, parse_header

DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
          "F64": torch.float64, "I64": torch.int64, "F8_E4M3": torch.float8_e4m3fn}

tensor_specs = st.dictionaries(
    st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=20)
    .filter(lambda s: s != "__metadata__"),
    st.tuples(st.sampled_from(sorted(DTYPES)), st.lists(st.integers(0, 5), max_size=3)),
    max_size=6,
)


@settings(max_examples=60, deadline=None)
@given(tensor_specs)
def test_parse_matches_official_writer(specs: dict) -> None:
    tensors = {n: torch.zeros(shape, dtype=DTYPES[dt]) for n, (dt, shape) in specs.items()}
    blob = st_save(tensors, metadata={"format": "pt"})
    n = header_length(blob[:8], len(blob), "x")
    hdr = parse_header(blob[8 : 8 + n], len(blob), "x")
    assert set(hdr.tensors) == set(specs)
    assert hdr.metadata == {"format": "pt"}
    for name, (dt, shape) in specs.items():
        e = hdr.tensors[name]
        assert e.dtype == dt and list(e.shape) == list(shape)
        assert 8 + n <= e.start <= e.end <= len(blob)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_only_raise_format_error(data: bytes) -> None:
    try:
        n = header_length(data[:8], len(data), "f")
        _ = parse_header(data[8 : 8 + n], len(data), "f").tensors
    except FormatError:
        pass


@settings(max_examples=100, deadline=None)
@given(st.dictionaries(st.text(max_size=5), st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=4), c, max_size=3),
    max_leaves=8), max_size=4))
def test_arbitrary_json_headers_only_raise_format_error(obj: dict) -> None:
    raw = json.dumps(obj).encode()
    blob = struct.pack("<Q", len(raw)) + raw + b"\0" * 64
    try:
        _ = parse_header(raw, len(blob), "f").tensors
    except FormatError:
        pass


def test_header_length_limits() -> None:
    with pytest.raises(FormatError, match="empty"):
        header_length(b"", 0, "f")
    with pytest.raises(FormatError, match="exceeds"):
        header_length(struct.pack("<Q", MAX_HEADER + 1), 10**9, "f")
    with pytest.raises(FormatError, match="truncated"):
        header_length(struct.pack("<Q", 100), 50, "f")


def test_offsets_outside_data_and_size_mismatch() -> None:
    raw = json.dumps({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 32]}}).encode()
    with pytest.raises(FormatError, match="outside"):
        parse_header(raw, 8 + len(raw) + 16, "f")
    # size and dtype are checked when an entry is used (lazily: 92k entries in DeepSeek-V3)
    raw = json.dumps({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 12]}}).encode()
    with pytest.raises(FormatError, match="12 bytes for shape"):
        parse_header(raw, 8 + len(raw) + 16, "f").entry("a")
    raw = json.dumps({"a": {"dtype": "Q7", "shape": [4], "data_offsets": [0, 16]}}).encode()
    with pytest.raises(FormatError, match="unknown dtype"):
        _ = parse_header(raw, 8 + len(raw) + 16, "f").tensors


def test_dtype_decoding_matches_torch() -> None:
    from ckpt_audit.readers.dtypes import decode

    x = torch.randn(257) * 3
    for dt, tdt in DTYPES.items():
        if dt == "I64":
            continue
        t = x.to(tdt)
        raw = t.view(torch.uint8).numpy().tobytes() if t.element_size() == 1 else (
            t.contiguous().view(torch.int8).numpy().tobytes())
        got = decode(raw, dt, (257,))
        np.testing.assert_array_equal(got, t.to(torch.float64).numpy().astype(got.dtype))
    # every E4M3 and E5M2 byte pattern, NaNs included
    allb = torch.arange(256, dtype=torch.uint8)
    for dt, tdt in (("F8_E4M3", torch.float8_e4m3fn), ("F8_E5M2", torch.float8_e5m2)):
        ref = allb.view(tdt).to(torch.float32).numpy()
        np.testing.assert_array_equal(decode(bytes(range(256)), dt, (256,)), ref)
