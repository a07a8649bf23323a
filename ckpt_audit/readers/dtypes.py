"""Decode raw little-endian tensor bytes into numpy arrays without torch.

BF16 widens to F32 by a 16-bit shift (exact); F8 formats decode through a 256-entry table that
follows the OCP FP8 spec (E4M3FN: bias 7, no infinities, NaN at 0x7F/0xFF; E5M2: the top byte of
an IEEE half). Integers and booleans decode as themselves so callers can see they are not gains.
"""

from __future__ import annotations

import numpy as np

from ckpt_audit.errors import FormatError

#: bytes per element, by safetensors dtype name
ITEMSIZE: dict[str, int] = {
    "F64": 8, "F32": 4, "F16": 2, "BF16": 2, "F8_E4M3": 1, "F8_E5M2": 1,
    "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "U16": 2, "U32": 4, "U64": 8, "BOOL": 1,
}

#: bits per element of every dtype the reference safetensors library accepts (the ones
#: :data:`ITEMSIZE` lacks are validated in headers but not decoded)
BITS: dict[str, int] = {
    **{k: 8 * v for k, v in ITEMSIZE.items()},
    "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6, "F8_E8M0": 8, "F8_E4M3FNUZ": 8, "F8_E5M2FNUZ": 8,
    "C64": 64,
}

_NUMPY: dict[str, str] = {
    "F64": "<f8", "F32": "<f4", "F16": "<f2", "I64": "<i8", "I32": "<i4", "I16": "<i2",
    "I8": "i1", "U8": "u1", "U16": "<u2", "U32": "<u4", "U64": "<u8", "BOOL": "?",
}


def _e4m3fn_table() -> np.ndarray:
    table = np.empty(256, dtype=np.float32)
    for b in range(256):
        s = -1.0 if b & 0x80 else 1.0
        e = (b >> 3) & 0xF
        m = b & 0x7
        if e == 0xF and m == 0x7:
            table[b] = np.nan
        elif e == 0:
            table[b] = s * (m / 8.0) * 2.0**-6
        else:
            table[b] = s * (1.0 + m / 8.0) * 2.0 ** (e - 7)
    return table


_E4M3 = _e4m3fn_table()


def decode(raw: bytes, dtype: str, shape: tuple[int, ...], source: str = "") -> np.ndarray:
    """Turn ``raw`` bytes of ``dtype`` into an array of ``shape`` (floats widened to >= float32)."""
    size = ITEMSIZE.get(dtype)
    if size is None:
        raise FormatError(f"unsupported dtype {dtype}", source or None)
    n = 1
    for s in shape:
        n *= s
    if len(raw) != n * size:
        raise FormatError(
            f"{len(raw)} bytes for {n} elements of {dtype} (expected {n * size})", source or None
        )
    if dtype == "BF16":
        out = (np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16).view(np.float32)
    elif dtype == "F8_E4M3":
        out = _E4M3[np.frombuffer(raw, dtype=np.uint8)]
    elif dtype == "F8_E5M2":
        out = (np.frombuffer(raw, dtype=np.uint8).astype(np.uint16) << 8).view(np.float16)
        out = out.astype(np.float32)
    else:
        out = np.frombuffer(raw, dtype=_NUMPY[dtype])
        if dtype == "F16":
            out = out.astype(np.float32)
    return out.reshape(shape)
