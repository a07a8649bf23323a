"""PyTorch Distributed Checkpoint folders (FSDP, torchtitan, NeMo 2) and Megatron ``torch_dist``.

A DCP folder holds ``.metadata`` and ``__R_N.distcp`` files. Each tensor chunk is a small
``torch.save`` zip stored at a byte range of one ``.distcp`` file; we read ``.metadata`` (see
:mod:`ckpt_audit.readers.dcp_metadata`), then only the byte ranges of the chunks that cover the
tensors asked for, merged per file, and decode each chunk with the allowlisting torch-zip reader.
No process group, no torch.

Megatron ``torch_dist`` (``metadata.json`` says ``"sharded_backend": "torch_dist"``) stacks the
homogeneous layers: ``decoder.layers.<param>`` has shape ``[num_layers, ...]``. Those are listed
as one tensor per layer, ``decoder.layers.<N>.<param>``, each read from just the chunks covering
row N. ``common.pt`` may carry Megatron-LM's ``args`` (d_model, MTP settings,
``apply_layernorm_1p``); when it does not, the config is empty and d_model comes from the final
norm's length. A Megatron run folder (``latest_checkpointed_iteration.txt``) resolves to its
iteration folder as for the legacy layout.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from ckpt_audit.errors import FormatError
from ckpt_audit.readers.base import CheckpointReader
from ckpt_audit.readers.dcp_metadata import METADATA_LIMIT, DcpChunk, DcpTensor, parse_metadata
from ckpt_audit.readers.megatron_common import args_config, resolve_iteration, uses_offset_gains
from ckpt_audit.readers.safe_pickle import TensorRef
from ckpt_audit.readers.signatures import DCP_METADATA as METADATA
from ckpt_audit.readers.signatures import NEMO_WEIGHTS
from ckpt_audit.readers.torch_reader import strip_prefixes
from ckpt_audit.readers.torch_zip import ZIP_MAGIC, TorchArchive
from ckpt_audit.records import Convention, TensorInfo
from ckpt_audit.storage import ByteSource, Location

#: top-level state-dict entries that are never model weights (optimizer moments, schedulers...)
SKIP_PREFIXES = ("optim.", "optimizer.", "optimizer_states.", "optimizer_state.",
                 "lr_scheduler.", "dataloader.", "train_state.", "rng_state.", "scheduler.")
#: Megatron torch_dist stacked layers: ``<prefix>.layers.<param>`` with no layer number
STACKED = re.compile(r"^((?:.*\.)?layers)\.([A-Za-z_].*)$")


class _MemorySource(ByteSource):
    """Bytes already fetched (one DCP chunk record), for :class:`TorchArchive`."""

    def __init__(self, data: bytes, name: str) -> None:
        self._data = data
        self.name = name

    def size(self) -> int:
        return len(self._data)

    def read(self, offset: int, length: int) -> bytes:
        if offset < 0 or length < 0 or offset + length > len(self._data):
            raise FormatError(f"chunk record is truncated (wanted [{offset}, {offset + length}) "
                              f"of {len(self._data)} bytes)", self.name)
        return self._data[offset : offset + length]


def dcp_folder(loc: Location) -> Location:
    """The folder holding ``.metadata``: a Megatron tracker's iteration folder, a NeMo 2
    checkpoint's ``weights/``, or ``loc`` itself."""
    folder = resolve_iteration(loc)
    if not folder.child(METADATA).exists():
        weights = folder.child(NEMO_WEIGHTS)
        if weights.child(METADATA).exists():
            return weights
    return folder


def is_megatron_dist(folder: Location) -> bool:
    """``metadata.json`` naming the ``torch_dist`` sharded backend."""
    meta = folder.child("metadata.json")
    if not meta.exists():
        return False
    obj = meta.read_json()
    return isinstance(obj, dict) and obj.get("sharded_backend") == "torch_dist"


class DcpReader(CheckpointReader):
    """Any PyTorch Distributed Checkpoint written by ``FileSystemWriter``."""

    format = "dcp"
    config_source = "config.json"

    def __init__(self, loc: Location) -> None:
        super().__init__(loc)
        self.folder = dcp_folder(loc)
        meta = self.folder.child(METADATA)
        if not meta.exists():
            raise FormatError("no .metadata file: not a Distributed Checkpoint folder",
                              self.folder.display)
        self._meta_loc = meta
        self._stored: dict[str, DcpTensor] | None = None
        self._infos: dict[str, TensorInfo] = {}
        #: listed name -> (stored fqn, row of a stacked tensor or None)
        self._where: dict[str, tuple[str, int | None]] = {}
        self._sources: dict[str, ByteSource] = {}
        self._config: dict[str, Any] | None = None
        self.stacked = is_megatron_dist(self.folder)

    @classmethod
    def detect(cls, loc: Location) -> bool:
        if not loc.is_dir():
            return False
        return dcp_folder(loc).child(METADATA).exists()

    def _metadata(self) -> dict[str, DcpTensor]:
        if self._stored is None:
            raw = self._meta_loc.read_bytes(limit=METADATA_LIMIT)
            self._stored = parse_metadata(raw, self._meta_loc.display)
        return self._stored

    def tensors(self) -> Mapping[str, TensorInfo]:
        if self._infos:
            return self._infos
        for fqn, t in self._metadata().items():
            if fqn.startswith(SKIP_PREFIXES):
                continue
            listed = strip_prefixes(fqn)  # NeMo 2 / DDP: "module.decoder..."
            m = STACKED.match(listed) if self.stacked else None
            if m and len(t.shape) >= 1:
                for i in range(t.shape[0]):
                    name = f"{m.group(1)}.{i}.{m.group(2)}"
                    self._add(name, t, i, t.shape[1:])
            else:
                self._add(listed, t, None, t.shape)
        return self._infos

    def _add(self, name: str, t: DcpTensor, row: int | None, shape: tuple[int, ...]) -> None:
        if name in self._infos:
            raise FormatError(f"tensor {name!r} is listed twice (stacked and per layer)",
                              self._meta_loc.display)
        files = sorted({c.file for c in t.chunks})
        source = self.folder.child(files[0]).display if files else self._meta_loc.display
        self._infos[name] = TensorInfo(name, shape, t.dtype, source)
        self._where[name] = (t.fqn, row)

    # -- reading ---------------------------------------------------------------------------
    def _source(self, file: str) -> ByteSource:
        src = self._sources.get(file)
        if src is None:
            if "/" in file or file.startswith(".."):
                raise FormatError(f"chunk file name {file!r} leaves the checkpoint folder",
                                  self._meta_loc.display)
            loc = self.folder.child(file)
            if not loc.exists():
                raise FormatError(f"metadata names a missing file {file!r}",
                                  self._meta_loc.display)
            src = loc.open()
            self._sources[file] = src
        return src

    def read(self, name: str) -> np.ndarray:
        return self.read_many([name])[name]

    def read_many(self, names: Iterable[str]) -> dict[str, np.ndarray]:
        self.tensors()
        wanted: dict[str, tuple[DcpTensor, tuple[int, ...], tuple[int, ...]]] = {}
        for name in names:
            if name not in self._where:
                raise FormatError(f"no tensor named {name!r}", self.display)
            fqn, row = self._where[name]
            t = self._metadata()[fqn]
            lo = tuple(0 for _ in t.shape)
            hi = t.shape
            if row is not None:
                lo = (row,) + lo[1:]
                hi = (row + 1,) + hi[1:]
            wanted[name] = (t, lo, hi)
        needed: dict[DcpChunk, None] = {}
        for t, lo, hi in wanted.values():
            for c in t.chunks:
                if _overlap(c, lo, hi):
                    needed[c] = None
        arrays = self._read_chunks(list(needed))
        out: dict[str, np.ndarray] = {}
        for name, (t, lo, hi) in wanted.items():
            box = _assemble(t, lo, hi, arrays, self._meta_loc.display)
            out[name] = box[0] if self._where[name][1] is not None else box
        return out

    def _read_chunks(self, chunks: list[DcpChunk]) -> dict[DcpChunk, np.ndarray]:
        by_file: dict[str, list[DcpChunk]] = {}
        for c in chunks:
            if c.transforms:
                raise FormatError(f"chunk stored with transforms {list(c.transforms)} "
                                  "(e.g. compression) is not supported", c.file)
            by_file.setdefault(c.file, []).append(c)
        out: dict[DcpChunk, np.ndarray] = {}
        for file, group in by_file.items():
            src = self._source(file)
            group.sort(key=lambda c: c.offset)
            blobs = src.read_ranges([(c.offset, c.length) for c in group])
            for c, blob in zip(group, blobs, strict=True):
                out[c] = _decode_chunk(blob, c, src.name)
        return out

    def config(self) -> dict[str, Any]:
        if self._config is None:
            self._config = {}
            common = self.folder.child("common.pt")
            cfg_json = self.folder.child("config.json")
            if common.exists():
                arc = TorchArchive(common.open())
                try:
                    tree = arc.tree
                finally:
                    arc.src.close()
                if isinstance(tree, dict):
                    self._config = args_config(tree.get("args"))
            elif cfg_json.exists():
                obj = cfg_json.read_json()
                self._config = obj if isinstance(obj, dict) else {}
        return dict(self._config)

    @property
    def convention_hint(self) -> Convention | None:  # type: ignore[override]
        """Offset (γ_eff = 1 + w) when Megatron's ``args.apply_layernorm_1p`` is set."""
        return Convention.OFFSET if uses_offset_gains(self.config()) else None

    def close(self) -> None:
        for src in self._sources.values():
            src.close()
        self._sources.clear()


class MegatronDistReader(DcpReader):
    """Megatron ``torch_dist``: a DCP folder with ``metadata.json`` and stacked layers."""

    format = "megatron-torch_dist"
    config_source = "megatron args"

    @classmethod
    def detect(cls, loc: Location) -> bool:
        if not loc.is_dir():
            return False
        folder = dcp_folder(loc)
        return folder.child(METADATA).exists() and is_megatron_dist(folder)


def _overlap(c: DcpChunk, lo: tuple[int, ...], hi: tuple[int, ...]) -> bool:
    return all(o < h and o + s > low for o, s, low, h in zip(c.offsets, c.sizes, lo, hi,
                                                              strict=True))


def _decode_chunk(blob: bytes, c: DcpChunk, file: str) -> np.ndarray:
    if blob[:4] != ZIP_MAGIC:
        raise FormatError(f"chunk at offset {c.offset} is not a torch.save record "
                          "(only the default torch_save serialization is supported)", file)
    arc = TorchArchive(_MemorySource(blob, f"{file}@{c.offset}"))
    ref = arc.tree
    if not isinstance(ref, TensorRef):
        raise FormatError(f"chunk at offset {c.offset} does not hold a tensor", file)
    if ref.shape != c.sizes:
        raise FormatError(f"chunk at offset {c.offset} has shape {ref.shape}, metadata says "
                          f"{c.sizes}", file)
    return arc.read_tensor(ref)


def _assemble(t: DcpTensor, lo: tuple[int, ...], hi: tuple[int, ...],
              arrays: dict[DcpChunk, np.ndarray], source: str) -> np.ndarray:
    """The box [lo, hi) of tensor ``t`` from its chunks; every element must be covered once."""
    shape = tuple(h - low for low, h in zip(lo, hi, strict=True))
    dtype = np.float64 if t.dtype == "F64" else np.float32
    out = np.zeros(shape, dtype=dtype)
    covered = 0
    for c in t.chunks:
        if not _overlap(c, lo, hi):
            continue
        ilo = [max(a, o) for a, o in zip(lo, c.offsets, strict=True)]
        ihi = [min(b, o + s) for b, o, s in zip(hi, c.offsets, c.sizes, strict=True)]
        src = arrays[c][tuple(slice(a - o, b - o) for a, b, o in zip(ilo, ihi, c.offsets,
                                                                     strict=True))]
        out[tuple(slice(a - low, b - low) for a, b, low in zip(ilo, ihi, lo, strict=True))] = src
        covered += int(np.prod([b - a for a, b in zip(ilo, ihi, strict=True)]))
    if covered != int(np.prod(shape)):
        raise FormatError(f"the chunks of {t.fqn!r} cover {covered} of {int(np.prod(shape))} "
                          "elements asked for", source)
    return out
