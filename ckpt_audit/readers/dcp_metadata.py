"""The ``.metadata`` file of a PyTorch Distributed Checkpoint, parsed without torch.

``.metadata`` is a pickled ``torch.distributed.checkpoint.metadata.Metadata``: for every tensor
its dtype, global shape and chunks (offsets/sizes in the global tensor), and in
``storage_data`` where each chunk lives (``__R_N.distcp`` file, byte offset, length). We unpickle
it with the shared allowlist (:mod:`ckpt_audit.readers.safe_pickle`), its dataclasses replaced by
inert placeholders that only hold their pickled state, and turn that state into plain
:class:`DcpTensor` records. torch is never imported and no process group is needed.
"""

from __future__ import annotations

from typing import Any

from ckpt_audit.errors import FormatError
from ckpt_audit.readers import safe_pickle
from ckpt_audit.readers.safe_pickle import TORCH_DTYPES, Inert, _DType, safe_loads
from ckpt_audit.records import frozen

_DCP = "torch.distributed.checkpoint"
DCP_INERT_GLOBALS: tuple[tuple[str, str], ...] = (
    (f"{_DCP}.metadata", "Metadata"),
    (f"{_DCP}.metadata", "TensorStorageMetadata"),
    (f"{_DCP}.metadata", "TensorProperties"),
    (f"{_DCP}.metadata", "ChunkStorageMetadata"),
    (f"{_DCP}.metadata", "BytesStorageMetadata"),
    (f"{_DCP}.metadata", "MetadataIndex"),
    (f"{_DCP}.metadata", "StorageMeta"),
    (f"{_DCP}.metadata", "_MEM_FORMAT_ENCODING"),
    (f"{_DCP}.filesystem", "_StorageInfo"),
    (f"{_DCP}.planner", "SavePlan"),
    (f"{_DCP}.planner", "WriteItem"),
    (f"{_DCP}.planner", "WriteItemType"),
    (f"{_DCP}.planner", "TensorWriteData"),
    ("torch.distributed._shard.sharded_tensor.metadata", "TensorProperties"),
    ("torch.distributed._shard.sharded_tensor.metadata", "MEM_FORMAT_ENCODING"),
    ("pathlib", "PosixPath"),
    ("pathlib", "WindowsPath"),
)
for _module, _name in DCP_INERT_GLOBALS:
    safe_pickle.allow_inert(_module, _name)

#: largest ``.metadata`` we parse (a 671B model's is tens of MB)
METADATA_LIMIT = 512 * 1024 * 1024


@frozen
class DcpChunk:
    """One stored piece of a tensor: its box in the global tensor and its bytes in a file."""

    offsets: tuple[int, ...]
    sizes: tuple[int, ...]
    file: str
    offset: int
    length: int
    transforms: tuple[str, ...]


@frozen
class DcpTensor:
    """A tensor of the checkpoint: fully-qualified name, dtype, global shape and its chunks."""

    fqn: str
    dtype: str
    shape: tuple[int, ...]
    chunks: tuple[DcpChunk, ...]


def _kind(obj: Any) -> str:
    return str(getattr(obj, "qualname", "")).rsplit(".", 1)[-1] if isinstance(obj, Inert) else ""


def _state(obj: Any, kind: str, source: str) -> Any:
    if _kind(obj) != kind:
        raise FormatError(f"DCP metadata: expected a {kind}, found {type(obj).__name__}", source)
    return obj.state


def _ints(val: Any, what: str, source: str) -> tuple[int, ...]:
    if not isinstance(val, tuple | list) or not all(isinstance(v, int) for v in val):
        raise FormatError(f"DCP metadata: {what} is not a tuple of ints", source)
    if any(v < 0 for v in val):
        raise FormatError(f"DCP metadata: negative {what}", source)
    return tuple(val)


def _dtype(props: Any, source: str) -> str:
    state = _state(props, "TensorProperties", source)
    dt = state.get("dtype") if isinstance(state, dict) else (state[0] if state else None)
    name = dt.name if isinstance(dt, _DType) else str(dt)
    return TORCH_DTYPES.get(name, name)


def _storage_index(storage_data: Any, source: str) -> dict[tuple[str, tuple[int, ...]], Any]:
    if not isinstance(storage_data, dict):
        raise FormatError("DCP metadata has no storage_data (not a filesystem checkpoint?)",
                          source)
    out: dict[tuple[str, tuple[int, ...]], Any] = {}
    for key, info in storage_data.items():
        idx = _state(key, "MetadataIndex", source)
        if not isinstance(idx, dict):
            raise FormatError("DCP metadata: malformed MetadataIndex", source)
        offset = idx.get("offset")
        off = () if offset is None else _ints(offset, "chunk offset", source)
        out[(str(idx.get("fqn")), off)] = _state(info, "_StorageInfo", source)
    return out


def parse_metadata(raw: bytes, source: str) -> dict[str, DcpTensor]:
    """Tensors of a DCP checkpoint from the bytes of its ``.metadata`` (byte items skipped)."""
    meta = safe_loads(raw, source)
    state = _state(meta, "Metadata", source)
    if not isinstance(state, dict) or not isinstance(state.get("state_dict_metadata"), dict):
        raise FormatError("DCP metadata has no state_dict_metadata", source)
    where = _storage_index(state.get("storage_data"), source)
    tensors: dict[str, DcpTensor] = {}
    for fqn, item in state["state_dict_metadata"].items():
        if _kind(item) != "TensorStorageMetadata":
            continue  # BytesStorageMetadata: pickled objects (extra state, rng), no gains
        tsm = item.state
        if not isinstance(tsm, dict):
            raise FormatError(f"DCP metadata: malformed entry for {fqn!r}", source)
        shape = _ints(tsm.get("size"), f"size of {fqn!r}", source)
        chunks = []
        for ch in tsm.get("chunks") or ():
            cst = _state(ch, "ChunkStorageMetadata", source)
            offs = _ints(cst.get("offsets"), f"chunk offsets of {fqn!r}", source)
            sizes = _ints(cst.get("sizes"), f"chunk sizes of {fqn!r}", source)
            if len(offs) != len(shape) or len(sizes) != len(shape) or any(
                o + s > d for o, s, d in zip(offs, sizes, shape, strict=True)
            ):
                raise FormatError(f"DCP metadata: chunk {offs} of {fqn!r} lies outside its "
                                  f"shape {shape}", source)
            info = where.get((str(fqn), offs))
            if info is None:
                raise FormatError(f"DCP metadata: no storage entry for chunk {offs} of {fqn!r}",
                                  source)
            transforms = tuple(str(t) for t in (info.get("transform_descriptors") or ()))
            chunks.append(DcpChunk(offs, sizes, str(info.get("relative_path")),
                                   int(info.get("offset", 0)), int(info.get("length", 0)),
                                   transforms))
        tensors[str(fqn)] = DcpTensor(str(fqn), _dtype(tsm.get("properties"), source), shape,
                                      tuple(chunks))
    return tensors
