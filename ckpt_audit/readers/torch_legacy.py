"""torch's legacy serialization (before torch 1.6, or ``_use_new_zipfile_serialization=False``).

The file is a sequence of pickles followed by raw storages: the magic number, the protocol
version (1001), a system-info dict, the object tree (tensors name their storages through
persistent ids ``('storage', type, key, location, numel, view)``), the list of storage keys, then
for each key in that list an int64 element count and the storage's raw little-endian bytes.

Every pickle goes through the allowlisting :class:`SafeUnpickler`; the storages' offsets are
computed from the keys' order and sizes (the total must end exactly at the end of the file), so a
gain is read by seeking to its storage alone. The class offers what :class:`TorchArchive` offers
(``tree``, ``read_tensor``, ``src``).
"""

from __future__ import annotations

import io
import pickle
from typing import Any

import numpy as np

from ckpt_audit.errors import FormatError, UnsafePickleError
from ckpt_audit.readers.dtypes import ITEMSIZE
from ckpt_audit.readers.safe_pickle import SafeUnpickler, StorageRef, TensorRef
from ckpt_audit.readers.torch_zip import _SourceFile, read_view
from ckpt_audit.storage import ByteSource

MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
PROTOCOL_VERSION = 1001
#: How the file starts: the magic number pickled with protocol 2 (torch's default).
LEGACY_MAGIC = pickle.dumps(MAGIC_NUMBER, protocol=2)
#: Bytes of pickles (everything before the storages) read at most.
MAX_PICKLES = 512 * 1024 * 1024


class _Storages(SafeUnpickler):
    """The allowlisting unpickler, collecting the storages the object tree names."""

    def __init__(self, f: Any, source: str) -> None:
        super().__init__(f, source)
        self.storages: dict[str, StorageRef] = {}

    def persistent_load(self, pid: Any) -> Any:
        if isinstance(pid, tuple) and len(pid) >= 6 and pid[5] is not None:
            raise UnsafePickleError("legacy storage views (torch < 0.4) are not supported",
                                    self.source)
        ref = super().persistent_load(pid)
        if isinstance(ref, StorageRef):
            old = self.storages.setdefault(ref.key, ref)
            if old != ref:
                raise UnsafePickleError(f"storage {ref.key!r} named twice with different types",
                                        self.source)
        return ref


def is_legacy(head: bytes) -> bool:
    """Whether a file's first bytes are a legacy torch file's magic number."""
    return head.startswith(LEGACY_MAGIC)


class LegacyArchive:
    """One legacy ``torch.save`` file: its object tree and where each storage's bytes are."""

    def __init__(self, src: ByteSource) -> None:
        self.src = src
        size = src.size()
        if not is_legacy(src.read(0, min(len(LEGACY_MAGIC), size))):
            raise FormatError("not a legacy torch file", src.name)
        f = io.BufferedReader(_SourceFile(src), 1 << 16)
        name = src.name
        if _load(f, name) != MAGIC_NUMBER:
            raise FormatError("bad legacy torch magic number", name)
        proto = _load(f, name)
        if proto != PROTOCOL_VERSION:
            raise FormatError(f"unsupported legacy torch protocol {proto!r}", name)
        _load(f, name)  # sys_info: endianness and type sizes of the writer
        unpickler = _Storages(f, name)
        try:
            self.tree = unpickler.load()
        except UnsafePickleError:
            raise
        except Exception as exc:
            raise UnsafePickleError(f"cannot unpickle ({type(exc).__name__}: {exc})",
                                    name) from None
        keys = _load(f, name)
        if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
            raise FormatError("legacy torch file has no valid list of storage keys", name)
        pos = f.tell()
        if pos > MAX_PICKLES:
            raise FormatError("legacy torch pickles are implausibly large", name)
        self._offsets: dict[str, int] = {}
        for key in keys:
            st = unpickler.storages.get(key)
            if st is None:
                raise FormatError(f"storage {key!r} is listed but no tensor uses it", name)
            item = ITEMSIZE.get(st.dtype)
            if item is None:
                raise FormatError(f"unsupported storage dtype {st.dtype}", name)
            self._offsets[key] = pos + 8
            pos += 8 + st.numel * item
        if pos != size or set(keys) != set(unpickler.storages):
            raise FormatError(
                f"legacy torch storages do not add up to the file ({pos} vs {size} bytes): "
                "truncated or corrupt", name)
        self._storages = unpickler.storages

    def read_tensor(self, ref: TensorRef) -> np.ndarray:
        """Read only the bytes of ``ref``'s view, after checking its storage's element count."""
        key = ref.storage.key
        start = self._offsets.get(key)
        if start is None:
            raise FormatError(f"no storage {key!r}", self.src.name)
        st = self._storages[key]
        count = int.from_bytes(self.src.read(start - 8, 8), "little", signed=True)
        if count != st.numel:
            raise FormatError(f"storage {key!r} holds {count} elements, the pickle says "
                              f"{st.numel}", self.src.name)
        return read_view(ref, st.numel * ITEMSIZE[st.dtype],
                         lambda lo, n: self.src.read(start + lo, n), self.src.name)


def _load(f: Any, name: str) -> Any:
    try:
        return _Storages(f, name).load()
    except UnsafePickleError:
        raise
    except Exception as exc:
        raise FormatError(f"corrupt legacy torch file ({type(exc).__name__}: {exc})",
                          name) from None
