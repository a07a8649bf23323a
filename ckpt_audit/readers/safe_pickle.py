"""An allowlisting unpickler for torch zip checkpoints that never runs foreign code.

``torch.save`` writes ``<archive>/data.pkl`` (the object tree) and one record per storage
(``<archive>/data/<key>``). We unpickle ``data.pkl`` with :class:`SafeUnpickler`: every global
the pickle names must be in :data:`SAFE_GLOBALS` (mapped to our own pure-Python stand-ins) or in
:data:`INERT_GLOBALS` (replaced by an inert placeholder that swallows its arguments), otherwise
:class:`UnsafePickleError` is raised before anything is called. Tensors become
:class:`TensorRef` objects that say where their bytes are; no storage is read here and torch is
not imported.

Other readers (Megatron, DeepSpeed) extend the tables with :func:`allow` and :func:`allow_inert`.
"""

from __future__ import annotations

import argparse
import codecs
import collections
import io
import pickle
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ckpt_audit.errors import UnsafePickleError

#: torch storage class name -> safetensors dtype name
STORAGE_DTYPES: dict[str, str] = {
    "DoubleStorage": "F64", "FloatStorage": "F32", "HalfStorage": "F16",
    "BFloat16Storage": "BF16", "LongStorage": "I64", "IntStorage": "I32",
    "ShortStorage": "I16", "CharStorage": "I8", "ByteStorage": "U8", "BoolStorage": "BOOL",
    "UntypedStorage": "U8",
}

#: torch dtype attribute name -> safetensors dtype name (``_rebuild_tensor_v3`` passes one)
TORCH_DTYPES: dict[str, str] = {
    "float64": "F64", "double": "F64", "float32": "F32", "float": "F32", "float16": "F16",
    "half": "F16", "bfloat16": "BF16", "int64": "I64", "long": "I64", "int32": "I32",
    "int": "I32", "int16": "I16", "int8": "I8", "uint8": "U8", "bool": "BOOL",
    "float8_e4m3fn": "F8_E4M3", "float8_e5m2": "F8_E5M2",
}


@dataclass(frozen=True)
class StorageRef:
    """A storage record of the archive: ``data/<key>``, with its element dtype."""

    key: str
    dtype: str
    numel: int


@dataclass(frozen=True)
class TensorRef:
    """A tensor as a view into a storage record: offset and strides counted in elements."""

    storage: StorageRef
    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]
    dtype: str


def flatten_state(obj: Any, prefix: str = "", skip: frozenset[str] = frozenset()
                  ) -> dict[str, TensorRef]:
    """Every :class:`TensorRef` in nested dicts, keyed by dotted path (the one state-dict
    flattener of the pickle readers); top-level keys in ``skip`` are left out."""
    out: dict[str, TensorRef] = {}
    if isinstance(obj, TensorRef):
        out[prefix.rstrip(".")] = obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            if not prefix and str(k) in skip:
                continue
            out.update(flatten_state(v, f"{prefix}{k}."))
    return out


@dataclass(frozen=True)
class _DType:
    name: str


class Inert:
    """Stand-in for an allowlisted-but-irrelevant object (rng states, enums, extra state)."""

    __slots__ = ("args", "state", "qualname")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args = args
        self.state: Any = None

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __repr__(self) -> str:
        return f"<inert {getattr(self, 'qualname', '?')}>"


def _rebuild_tensor(storage: Any, offset: int, size: Any, stride: Any, *rest: Any) -> TensorRef:
    if not isinstance(storage, StorageRef):
        raise UnsafePickleError("tensor rebuilt from something that is not a storage record")
    return TensorRef(storage, int(offset), tuple(int(s) for s in size),
                     tuple(int(s) for s in stride), storage.dtype)


def _rebuild_tensor_v3(storage: Any, offset: int, size: Any, stride: Any, requires_grad: Any,
                       hooks: Any, dtype: Any, *rest: Any) -> TensorRef:
    ref = _rebuild_tensor(storage, offset, size, stride)
    name = dtype.name if isinstance(dtype, _DType) else str(dtype)
    return TensorRef(ref.storage, ref.offset, ref.shape, ref.stride, TORCH_DTYPES.get(name, name))


def _rebuild_parameter(data: Any, *rest: Any) -> Any:
    return data


def _rebuild_from_type_v2(func: Callable[..., Any], new_type: Any, args: Any, state: Any) -> Any:
    return func(*args)


def _codecs_encode(obj: Any, encoding: str = "utf-8", errors: str = "strict") -> bytes:
    if encoding not in ("latin1", "latin-1", "utf-8", "utf8"):
        raise UnsafePickleError(f"refused _codecs.encode with encoding {encoding!r}")
    return codecs.encode(obj, encoding, errors)


class _StorageType:
    def __init__(self, dtype: str) -> None:
        self.dtype = dtype


SAFE_GLOBALS: dict[tuple[str, str], Any] = {
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v3"): _rebuild_tensor_v3,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch._tensor", "_rebuild_from_type_v2"): _rebuild_from_type_v2,
    ("torch.nn.parameter", "Parameter"): Inert,
    ("torch", "Tensor"): Inert,
    ("torch", "Size"): tuple,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "slice"): slice,
    ("builtins", "complex"): complex,
    ("builtins", "bytearray"): bytearray,
    ("_codecs", "encode"): _codecs_encode,
    ("argparse", "Namespace"): argparse.Namespace,
}
for _name, _dt in STORAGE_DTYPES.items():
    SAFE_GLOBALS[("torch", _name)] = _StorageType(_dt)
    SAFE_GLOBALS[("torch.storage", _name)] = _StorageType(_dt)
for _name in TORCH_DTYPES:
    SAFE_GLOBALS[("torch", _name)] = _DType(_name)

#: Globals that may appear but whose objects we never need: replaced by :class:`Inert`.
INERT_GLOBALS: set[tuple[str, str]] = {
    ("torch", "device"),
    ("torch.serialization", "_get_layout"),
    ("torch", "strided"),
}


def allow(module: str, name: str, value: Any) -> None:
    """Add a safe stand-in for ``module.name`` (for format readers that need more globals)."""
    SAFE_GLOBALS[(module, name)] = value


def allow_inert(module: str, name: str) -> None:
    """Let ``module.name`` appear, replaced by an inert placeholder that runs nothing."""
    INERT_GLOBALS.add((module, name))


#: Modules that extend the allowlist when imported (format readers with their own globals).
EXTENSIONS = ("ckpt_audit.readers.megatron_common", "ckpt_audit.readers.dcp_metadata",
              "ckpt_audit.readers.deepspeed_zero3")


def _load_extensions() -> None:
    """Import every allowlist extension, so what a pickle may name never depends on which
    reader happened to be imported first (``--format-hint torch`` on a Megatron file)."""
    import importlib

    for mod in EXTENSIONS:
        importlib.import_module(mod)


def _inert_class(module: str, name: str) -> type[Inert]:
    return type(name, (Inert,), {"__slots__": (), "qualname": f"{module}.{name}"})


class SafeUnpickler(pickle.Unpickler):
    """Unpickles only allowlisted globals; storages become :class:`StorageRef` objects."""

    def __init__(self, data: bytes, source: str) -> None:
        super().__init__(io.BytesIO(data))
        self.source = source

    def find_class(self, module: str, name: str) -> Any:
        key = (module, name)
        if key not in SAFE_GLOBALS and key not in INERT_GLOBALS:
            _load_extensions()
        if key in SAFE_GLOBALS:
            return SAFE_GLOBALS[key]
        if key in INERT_GLOBALS:
            return _inert_class(module, name)
        raise UnsafePickleError(
            f"refused to unpickle: the pickle asks for global '{module}.{name}', "
            "which is not on the allowlist (nothing was executed)",
            self.source,
        )

    def persistent_load(self, pid: Any) -> Any:
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
            raise UnsafePickleError(f"unexpected persistent id {pid!r}", self.source)
        _, stype, key, _location, numel = pid[:5]
        dtype = stype.dtype if isinstance(stype, _StorageType) else "U8"
        return StorageRef(str(key), dtype, int(numel))


def safe_loads(data: bytes, source: str) -> Any:
    """Unpickle ``data`` with the allowlist; any other failure is an :class:`UnsafePickleError`."""
    try:
        return SafeUnpickler(data, source).load()
    except UnsafePickleError:
        raise
    except Exception as exc:  # malformed pickles raise all sorts of errors
        raise UnsafePickleError(f"cannot unpickle ({type(exc).__name__}: {exc})", source) from None
