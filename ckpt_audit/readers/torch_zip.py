"""The torch zip archive (``torch.save`` since 1.6): locate records and read byte ranges of them.

Records are stored uncompressed (and 64-byte aligned), so a tensor's bytes are a plain range of
the file: we parse the zip's central directory, then each record's local header, and read only
the bytes a tensor view covers. Works over any :class:`~ckpt_audit.storage.ByteSource`, local or
remote.
"""

from __future__ import annotations

import io
import math
import struct
import zipfile
import zlib
from collections.abc import Callable
from typing import Any

import numpy as np

from ckpt_audit.errors import FormatError
from ckpt_audit.readers.dtypes import ITEMSIZE, decode
from ckpt_audit.readers.safe_pickle import TensorRef, safe_loads
from ckpt_audit.storage import ByteSource

ZIP_MAGIC = b"PK\x03\x04"


class _SourceFile(io.RawIOBase):
    """A read-only, seekable file object over a ByteSource (what :mod:`zipfile` needs)."""

    def __init__(self, src: ByteSource) -> None:
        self._src = src
        self._pos = 0
        self._size = src.size()

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = 0) -> int:
        base = {0: 0, 1: self._pos, 2: self._size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def readinto(self, b: Any) -> int:
        n = min(len(b), self._size - self._pos)
        if n <= 0:
            return 0
        data = self._src.read(self._pos, n)
        b[:n] = data
        self._pos += n
        return n


class TorchArchive:
    """One ``torch.save`` zip file: its object tree and the byte ranges of its records."""

    def __init__(self, src: ByteSource) -> None:
        self.src = src
        size = src.size()
        if size == 0:
            raise FormatError("empty file", src.name)
        head = src.read(0, min(4, size))
        if head != ZIP_MAGIC:
            raise FormatError(
                "not a torch checkpoint (neither a torch zip nor a legacy torch file; raw "
                "pickles are refused: re-save with torch.save or convert to safetensors)",
                src.name,
            )
        try:
            self._zip = zipfile.ZipFile(io.BufferedReader(_SourceFile(src), 65536))
            infos = self._zip.infolist()
        # NotImplementedError: a central directory entry needing a zip version zipfile lacks
        except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError) as exc:
            raise FormatError(f"corrupt or truncated zip archive ({exc})", src.name) from None
        self._infos = {i.filename: i for i in infos}
        pkl = [n for n in self._infos if n.endswith("data.pkl") and n.count("/") == 1]
        if len(pkl) != 1:
            raise FormatError("zip archive has no single '<archive>/data.pkl'", src.name)
        self.prefix = pkl[0][: -len("data.pkl")]
        self._data_offsets: dict[str, int] = {}
        self._tree: Any = None

    @property
    def tree(self) -> Any:
        """The unpickled object tree (tensors as :class:`TensorRef`)."""
        if self._tree is None:
            self._tree = safe_loads(self._member_bytes(self.prefix + "data.pkl"), self.src.name)
        return self._tree

    def _member_bytes(self, name: str) -> bytes:
        info = self._infos.get(name)
        if info is None:
            raise FormatError(f"archive has no record {name!r}", self.src.name)
        if info.file_size > 512 * 1024 * 1024:
            raise FormatError(f"record {name!r} is implausibly large", self.src.name)
        try:
            return self._zip.read(info)
        except (zipfile.BadZipFile, OSError, EOFError, ValueError, zlib.error,
                NotImplementedError, RuntimeError) as exc:  # an unknown or encrypted method too
            raise FormatError(f"cannot read record {name!r} ({exc})", self.src.name) from None

    def _data_offset(self, record: str) -> tuple[int, zipfile.ZipInfo]:
        info = self._infos.get(record)
        if info is None:
            raise FormatError(f"archive has no storage record {record!r}", self.src.name)
        if record not in self._data_offsets:
            local = self.src.read(info.header_offset, 30)
            if local[:4] != ZIP_MAGIC:
                raise FormatError(f"bad local header for {record!r}", self.src.name)
            name_len, extra_len = struct.unpack("<HH", local[26:30])
            start = info.header_offset + 30 + name_len + extra_len
            if start + info.compress_size > self.src.size():
                raise FormatError(f"record {record!r} runs past the end of the file",
                                  self.src.name)
            self._data_offsets[record] = start
        return self._data_offsets[record], info

    def read_tensor(self, ref: TensorRef) -> np.ndarray:
        """Read only the bytes of ``ref``'s view (a 1-D gain: exactly its elements)."""
        record = f"{self.prefix}data/{ref.storage.key}"
        start, info = self._data_offset(record)
        if info.compress_type != zipfile.ZIP_STORED:
            data = self._member_bytes(record)
            return read_view(ref, info.file_size, lambda lo, n: data[lo : lo + n], self.src.name)
        return read_view(ref, info.file_size, lambda lo, n: self.src.read(start + lo, n),
                         self.src.name)


def read_view(ref: TensorRef, storage_bytes: int, read: Callable[[int, int], bytes],
              where: str) -> np.ndarray:
    """Read only the bytes of ``ref``'s view of a storage of ``storage_bytes`` bytes, through
    ``read(byte offset in the storage, length)`` (a 1-D gain: exactly its elements)."""
    item = ITEMSIZE.get(ref.dtype)
    if item is None:
        raise FormatError(f"unsupported tensor dtype {ref.dtype}", where)
    numel = math.prod(ref.shape)
    if len(ref.stride) != len(ref.shape):
        raise FormatError(f"tensor view with shape {ref.shape} and stride {ref.stride} "
                          "(different lengths)", where)
    if numel > storage_bytes // item:  # budget: a view costs at most its storage
        raise FormatError(f"tensor view of {numel} elements is larger than its storage "
                          f"record {ref.storage.key!r} ({storage_bytes // item} elements): "
                          "refused before reading", where)
    if numel == 0:
        return np.zeros(ref.shape, dtype=np.float32)
    lo = ref.offset
    hi = ref.offset + sum((s - 1) * st for s, st in zip(ref.shape, ref.stride, strict=True))
    if min(ref.stride, default=0) < 0 or lo < 0 or (hi + 1) * item > storage_bytes:
        raise FormatError(f"tensor view outside its storage record {ref.storage.key!r}", where)
    raw = read(lo * item, (hi + 1 - lo) * item)
    span = decode(raw, ref.dtype, (hi + 1 - lo,), where)
    if len(ref.shape) <= 1 and (not ref.stride or ref.stride[0] == 1):
        return span.reshape(ref.shape).copy()
    strides = tuple(st * span.itemsize for st in ref.stride)
    return np.lib.stride_tricks.as_strided(span, ref.shape, strides).copy()
