"""torch zip pickles: ``pytorch_model.bin``, ``*.pt``/``*.pth``, sharded ``*.bin.index.json``.

The object tree is unpickled with the allowlist of :mod:`ckpt_audit.readers.safe_pickle`; the
state dict is found under the usual wrapper keys (``state_dict``, ``model_state_dict``,
``model``, ``module``) and ``module.``/``_orig_mod.`` prefixes (DDP, ``torch.compile``) are
stripped. Only the bytes of the tensors asked for are read.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from ckpt_audit.errors import FormatError
from ckpt_audit.readers.base import CheckpointReader
from ckpt_audit.readers.hf_index import TORCH_INDEX, shard_locations
from ckpt_audit.readers.safe_pickle import TensorRef, flatten_state
from ckpt_audit.readers.torch_zip import ZIP_MAGIC, TorchArchive
from ckpt_audit.records import TensorInfo
from ckpt_audit.storage import Location

INDEX_NAME = TORCH_INDEX
SINGLE_NAMES = ("pytorch_model.bin", "model.pt", "model.pth", "consolidated.pth")
SUFFIXES = (".bin", ".pt", ".pth", ".ckpt")
#: Keys that wrap the state dict in training checkpoints, in the order they are tried.
WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "module", "model_state")
#: Top-level keys that are never model weights.
SKIP_KEYS = frozenset({"optimizer", "optimizer_states", "optim", "lr_scheduler", "scheduler",
                       "rng_state", "rng_tracker_states", "scaler", "ema"})
STRIP_PREFIXES = ("module.", "_orig_mod.")


def strip_prefixes(name: str, prefixes: tuple[str, ...] = STRIP_PREFIXES) -> str:
    """Remove DDP (``module.``) and ``torch.compile`` (``_orig_mod.``) prefixes (or others)."""
    changed = True
    while changed:
        changed = False
        for p in prefixes:
            if name.startswith(p):
                name = name[len(p) :]
                changed = True
    return name.replace("._orig_mod.", ".")


def find_state_dict(tree: Any, source: str = "checkpoint") -> dict[str, TensorRef]:
    """The model's tensors in a checkpoint object tree, with canonical names."""
    if isinstance(tree, dict):
        direct = {k: v for k, v in tree.items() if isinstance(v, TensorRef)}
        if not direct:
            for key in WRAPPER_KEYS:
                inner = tree.get(key)
                if isinstance(inner, dict):
                    found = flatten_state(inner, source, skip=SKIP_KEYS)
                    if found:
                        return {strip_prefixes(k): v for k, v in found.items()}
    return {strip_prefixes(k): v for k, v in flatten_state(tree, source, skip=SKIP_KEYS).items()}


def plain_config(tree: Any) -> dict[str, Any]:
    """Hyper-parameters carried as a plain dict (nanoGPT ``model_args``, ``config``)."""
    if not isinstance(tree, dict):
        return {}
    for key in ("config", "model_args", "hparams", "hyper_parameters"):
        val = tree.get(key)
        if isinstance(val, dict) and all(isinstance(k, str) for k in val):
            return {k: v for k, v in val.items() if isinstance(v, int | float | str | bool)}
    return {}


class TorchReader(CheckpointReader):
    """Reads torch zip checkpoints lazily through the allowlisting unpickler."""

    format = "torch"

    def __init__(self, loc: Location) -> None:
        super().__init__(loc)
        self._folder = loc if loc.is_dir() else None
        self._archives: dict[str, TorchArchive] = {}
        self._files = self._file_locations(loc)
        self._refs: dict[str, tuple[str, TensorRef]] = {}
        self._infos: dict[str, TensorInfo] | None = None
        self._config: dict[str, Any] = {}

    @classmethod
    def detect(cls, loc: Location) -> bool:
        if loc.is_dir():
            names = loc.listdir()
            return INDEX_NAME in names or any(n in names for n in SINGLE_NAMES)
        try:
            src = loc.open()
            try:
                return src.read(0, min(4, src.size())) == ZIP_MAGIC
            finally:
                src.close()
        except FormatError:
            return False

    def _file_locations(self, loc: Location) -> dict[str, Location]:
        if not loc.is_dir():
            return {loc.name: loc}
        index = loc.child(INDEX_NAME)
        if index.exists():
            return shard_locations(loc, index)
        for name in SINGLE_NAMES:
            if loc.child(name).exists():
                return {name: loc.child(name)}
        names = [n for n in loc.listdir() if n.endswith(SUFFIXES)]
        if not names:
            raise FormatError("no torch checkpoint files in this folder", loc.display)
        return {n: loc.child(n) for n in names}

    def archive(self, shard: str) -> TorchArchive:
        arc = self._archives.get(shard)
        if arc is None:
            arc = TorchArchive(self._files[shard].open())
            self._archives[shard] = arc
        return arc

    def tensors(self) -> Mapping[str, TensorInfo]:
        if self._infos is None:
            infos: dict[str, TensorInfo] = {}
            for shard, floc in self._files.items():
                arc = self.archive(shard)
                tree = arc.tree
                if not self._config:
                    self._config = plain_config(tree)
                for name, ref in find_state_dict(tree, floc.display).items():
                    if name in infos:
                        raise FormatError(f"tensor {name!r} appears in two files", floc.display)
                    infos[name] = TensorInfo(name, ref.shape, ref.dtype, floc.display)
                    self._refs[name] = (shard, ref)
            self._infos = infos
        return self._infos

    def read(self, name: str) -> np.ndarray:
        self.tensors()
        if name not in self._refs:
            raise FormatError(f"no tensor named {name!r}", self.display)
        shard, ref = self._refs[name]
        return self.archive(shard).read_tensor(ref)

    def read_many(self, names: Iterable[str]) -> dict[str, np.ndarray]:
        return {n: self.read(n) for n in names}

    def config(self) -> dict[str, Any]:
        self.tensors()
        if self._folder is not None and self._folder.child("config.json").exists():
            obj = self._folder.child("config.json").read_json()
            if isinstance(obj, dict):
                return obj
        return dict(self._config)

    def close(self) -> None:
        for arc in self._archives.values():
            arc.src.close()
        self._archives.clear()
