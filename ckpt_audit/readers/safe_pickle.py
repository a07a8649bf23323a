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
import copy
import io
import pickle
from collections.abc import Callable
from typing import IO, Any

from ckpt_audit.errors import UnsafePickleError, escape
from ckpt_audit.records import frozen

#: Budgets for one unpickled file: the pickle's bytes (bounding its opcodes and memo), the bytes
#: one allowlisted call may allocate, a tensor's dimensions, and for the walk over the object
#: tree, its nesting depth and the number of containers it visits.
MAX_PICKLE = 512 * 1024 * 1024
MAX_ALLOC = 16 * 1024 * 1024
MAX_DIMS = 64
MAX_DEPTH = 64
MAX_NODES = 5_000_000

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


@frozen
class StorageRef:
    """A storage record of the archive: ``data/<key>``, with its element dtype."""

    key: str
    dtype: str
    numel: int


@frozen
class TensorRef:
    """A tensor as a view into a storage record: offset and strides counted in elements."""

    storage: StorageRef
    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]
    dtype: str


@frozen
class _DType:
    """A numpy dtype named in a pickle, kept by name."""

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


def _ints(value: Any, what: str) -> tuple[int, ...]:
    if not isinstance(value, tuple | list) or len(value) > MAX_DIMS \
            or not all(type(v) is int and v >= 0 for v in value):
        raise UnsafePickleError(f"tensor {what} is not a short tuple of non-negative ints")
    return tuple(value)


def _rebuild_tensor(storage: Any, offset: Any, size: Any, stride: Any, *rest: Any) -> TensorRef:
    if not isinstance(storage, StorageRef):
        raise UnsafePickleError("tensor rebuilt from something that is not a storage record")
    shape, strides = _ints(size, "shape"), _ints(stride, "stride")
    if len(shape) != len(strides):
        raise UnsafePickleError(f"tensor shape {shape} and stride {strides} differ in length")
    if type(offset) is not int or offset < 0:
        raise UnsafePickleError(f"tensor storage offset {offset!r} is not a non-negative int")
    return TensorRef(storage, offset, shape, strides, storage.dtype)


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


def _bytearray(*args: Any) -> bytearray:
    """``bytearray`` without the allocation: ``bytearray(2**31)`` is refused."""
    if args and isinstance(args[0], int) and args[0] > MAX_ALLOC:
        raise UnsafePickleError(f"bytearray({args[0]}) is over the {MAX_ALLOC}-byte budget for "
                                "one object")
    return bytearray(*args)


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
    ("builtins", "bytearray"): _bytearray,
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


class _Call:
    """A fresh per-file wrapper of an allowlisted function: calling it calls the function, and
    BUILD on it (which would set attributes on the shared function) is refused."""

    __slots__ = ("_fn",)

    def __init__(self, fn: Callable[..., Any]) -> None:
        self._fn = fn

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._fn(*args, **kwargs)

    def __setstate__(self, state: Any) -> None:
        raise UnsafePickleError("refused to BUILD on an allowlisted function")


def _fresh(value: Any, module: str, name: str) -> Any:
    """A stand-in for one file only, so nothing a pickle does to it (BUILD, SETITEM, setattr
    through slot state) outlives that file: a class becomes a fresh subclass, a stand-in object a
    copy, a function a :class:`_Call` wrapper."""
    if isinstance(value, type):
        try:
            return type(value.__name__, (value,), {"__module__": module})
        except TypeError:  # final types (slice, bool): wrap the constructor instead
            return _Call(value)
    if callable(value):
        return _Call(value)
    return copy.copy(value)


class SafeUnpickler(pickle.Unpickler):
    """Unpickles only allowlisted globals; storages become :class:`StorageRef` objects. Each
    instance hands out its own fresh stand-ins (:func:`_fresh`): one unpickler per file."""

    def __init__(self, data: bytes | IO[bytes], source: str) -> None:
        # a file object lets a caller unpickle several pickles in a row (legacy torch files)
        super().__init__(io.BytesIO(data) if isinstance(data, bytes | bytearray) else data)
        self.source = source
        self._standins: dict[tuple[str, str], Any] = {}

    def find_class(self, module: str, name: str) -> Any:
        key = (module, name)
        if key in self._standins:
            return self._standins[key]
        if key not in SAFE_GLOBALS and key not in INERT_GLOBALS:
            _load_extensions()
        if key in SAFE_GLOBALS:
            self._standins[key] = _fresh(SAFE_GLOBALS[key], module, name)
            return self._standins[key]
        if key in INERT_GLOBALS:
            self._standins[key] = _inert_class(module, name)
            return self._standins[key]
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
        if not isinstance(key, str | int) or type(numel) is not int or numel < 0:
            raise UnsafePickleError(f"malformed storage id {escape(pid)[:200]}", self.source)
        return StorageRef(str(key), str(dtype), numel)


def safe_loads(data: bytes, source: str) -> Any:
    """Unpickle ``data`` with the allowlist; any other failure is an :class:`UnsafePickleError`."""
    if len(data) > MAX_PICKLE:
        raise UnsafePickleError(f"pickle of {len(data)} bytes is over the {MAX_PICKLE}-byte "
                                "budget", source)
    try:
        return SafeUnpickler(data, source).load()
    except UnsafePickleError as exc:
        if exc.path is None:
            exc.path = source
        raise
    except MemoryError:
        raise UnsafePickleError("unpickling ran out of memory", source) from None
    except Exception as exc:  # malformed pickles raise all sorts of errors
        raise UnsafePickleError(f"cannot unpickle ({type(exc).__name__}: {escape(exc)[:200]})",
                                source) from None


def flatten_state(obj: Any, source: str = "checkpoint", skip: frozenset[str] = frozenset(),
                  skip_suffix: str | None = None, prefix: str = "") -> dict[str, TensorRef]:
    """Every :class:`TensorRef` in nested dicts, keyed by dotted path (``prefix`` first): the
    one state-dict flattener of the pickle readers.

    Iterative and within budgets: each container is visited once (memo by identity, so dicts
    that share references through the pickle memo cost their size, not 2^depth walks), at most
    :data:`MAX_DEPTH` deep and :data:`MAX_NODES` containers in all, else an
    :class:`UnsafePickleError` naming ``source`` and the budget. ``skip`` names top-level keys
    never walked (optimizer state); names ending in ``skip_suffix`` are left out."""
    out: dict[str, TensorRef] = {}
    seen: set[int] = set()
    stack: list[tuple[Any, str, int]] = [(obj, prefix, 0)]
    while stack:
        node, path, depth = stack.pop()
        if isinstance(node, TensorRef):
            name = path.rstrip(".")
            if skip_suffix is None or not name.endswith(skip_suffix):
                out[name] = node
            continue
        if not isinstance(node, dict) or id(node) in seen:
            continue
        seen.add(id(node))
        if depth >= MAX_DEPTH or len(seen) > MAX_NODES:
            budget = (f"{MAX_DEPTH}-level nesting" if depth >= MAX_DEPTH
                      else f"{MAX_NODES}-container")
            raise UnsafePickleError(f"object tree is over the {budget} budget", source)
        items = [(k, v) for k, v in node.items() if not (depth == 0 and str(k) in skip)]
        stack.extend((v, f"{path}{k}.", depth + 1) for k, v in reversed(items))
    return out
