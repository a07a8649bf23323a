"""torch pickles, zip (torch >= 1.6) or legacy: ``pytorch_model.bin``, ``*.pt``/``*.pth``,
sharded ``*.bin.index.json``.

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
from ckpt_audit.readers.signatures import TORCH_SINGLE_NAMES as SINGLE_NAMES
from ckpt_audit.readers.signatures import torch_folder
from ckpt_audit.readers.torch_legacy import LEGACY_MAGIC, LegacyArchive, is_legacy
from ckpt_audit.readers.torch_zip import ZIP_MAGIC, TorchArchive
from ckpt_audit.records import TensorInfo
from ckpt_audit.storage import ByteSource, Location

INDEX_NAME = TORCH_INDEX
SUFFIXES = (".bin", ".pt", ".pth", ".ckpt")
#: Keys that wrap the state dict in training checkpoints, in the order they are tried.
WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "module", "model_state", "network")
#: Top-level keys that are never the model's weights unless asked for with ``--state-key``
#: (an EMA copy is a second set of weights: audited only when the user picks it).
SKIP_KEYS = frozenset({"optimizer", "optimizer_states", "optimizer_state_dict", "optim",
                       "lr_scheduler", "scheduler", "rng_state", "rng_tracker_states", "scaler",
                       "ema", "model_ema", "ema_state_dict", "ema_model"})
STRIP_PREFIXES = ("module.", "_orig_mod.")
#: Plain-dict hyper-parameters, in the order they are tried (nanoGPT ``model_args`` first: its
#: ``config`` is the training script's globals).
CONFIG_KEYS = ("model_args", "config", "hparams", "hyper_parameters", "args")
#: Nesting depth explored when looking for tensors under a wrapper key.
MAX_DEPTH = 8


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




def _has_weights(obj: Any, depth: int = 0) -> bool:
    """Whether nested dicts under ``obj`` hold a tensor with at least one dimension."""
    if isinstance(obj, TensorRef):
        return len(obj.shape) > 0
    if isinstance(obj, dict) and depth <= MAX_DEPTH:
        return any(_has_weights(v, depth + 1) for v in obj.values())
    return False


def _canonical(found: dict[str, TensorRef], where: str) -> dict[str, TensorRef]:
    out: dict[str, TensorRef] = {}
    for k, v in found.items():
        name = strip_prefixes(k)
        if name in out:
            raise FormatError(f"two tensors are both named {name!r} once the module./_orig_mod. "
                              "prefixes are removed", where)
        out[name] = v
    return out


def find_state_dict(tree: Any, state_key: str | None = None,
                    where: str = "") -> dict[str, TensorRef]:
    """The model's tensors in a checkpoint object tree, with canonical names.

    Unwrapped by content: while a level holds no weight tensor of its own (0-d metrics such as
    nanoGPT's ``best_val_loss`` do not count) and a wrapper key (``model``, ``state_dict``...)
    holds weights, descend into it. ``state_key`` (dotted, e.g. ``ema`` or ``model_ema``) picks
    the subtree explicitly.
    """
    if state_key:
        node = tree
        for part in state_key.split("."):
            if not isinstance(node, dict) or part not in node:
                keys = ", ".join(sorted(map(str, tree))[:20]) if isinstance(tree, dict) else ""
                raise FormatError(f"--state-key {state_key!r} is not in this checkpoint "
                                  f"(top-level keys: {keys or 'none'})", where)
            node = node[part]
        found = flatten_state(node, where or "checkpoint", skip=frozenset())
        if not any(len(r.shape) > 0 for r in found.values()):
            raise FormatError(f"--state-key {state_key!r} holds no weight tensors", where)
        return _canonical(found, where)
    node = tree
    for _ in range(MAX_DEPTH):
        if not isinstance(node, dict):
            break
        if any(isinstance(v, TensorRef) and len(v.shape) > 0 for v in node.values()):
            break  # this level is a state dict itself
        inner = next((node[k] for k in WRAPPER_KEYS if _has_weights(node.get(k))), None)
        if inner is None:
            break
        node = inner
    return _canonical(flatten_state(node, where or "checkpoint", skip=SKIP_KEYS), where)


def plain_config(tree: Any) -> tuple[dict[str, Any], str | None]:
    """Hyper-parameters carried as a plain dict (nanoGPT ``model_args``, ``config``) and the key
    they came from."""
    if not isinstance(tree, dict):
        return {}, None
    for key in CONFIG_KEYS:
        val = tree.get(key)
        if isinstance(val, dict) and val and all(isinstance(k, str) for k in val):
            return {k: v for k, v in val.items() if isinstance(v, int | float | str | bool)}, key
    return {}, None


def open_archive(src: ByteSource) -> TorchArchive | LegacyArchive:
    """A torch file of either serialization: zip (torch >= 1.6) or legacy (a pickle sequence)."""
    try:
        head = src.read(0, min(len(LEGACY_MAGIC), src.size()))
        return LegacyArchive(src) if is_legacy(head) else TorchArchive(src)
    except BaseException:
        src.close()
        raise


class TorchReader(CheckpointReader):
    """Reads torch zip checkpoints lazily through the allowlisting unpickler."""

    format = "torch"
    accepts_state_key = True

    def __init__(self, loc: Location) -> None:
        super().__init__(loc)
        self._folder = loc if loc.is_dir() else None
        self._archives: dict[str, TorchArchive | LegacyArchive] = {}
        self._files = self._file_locations(loc)
        self._refs: dict[str, tuple[str, TensorRef]] = {}
        self._infos: dict[str, TensorInfo] | None = None
        self._config: dict[str, Any] = {}
        self._config_key: str | None = None

    @classmethod
    def detect(cls, loc: Location) -> bool:
        if loc.is_dir():
            return torch_folder(loc.listdir())
        try:
            src = loc.open()
            try:
                head = src.read(0, min(len(LEGACY_MAGIC), src.size()))
            finally:
                src.close()
        except FormatError:
            return False
        return head[:4] == ZIP_MAGIC or is_legacy(head)

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

    def archive(self, shard: str) -> TorchArchive | LegacyArchive:
        arc = self._archives.get(shard)
        if arc is None:
            arc = open_archive(self._files[shard].open())
            self._archives[shard] = arc
        return arc

    def tensors(self) -> Mapping[str, TensorInfo]:
        if self._infos is None:
            infos: dict[str, TensorInfo] = {}
            for shard, floc in self._files.items():
                arc = self.archive(shard)
                tree = arc.tree
                if not self._config:
                    self._config, self._config_key = plain_config(tree)
                for name, ref in find_state_dict(tree, self.state_key, floc.display).items():
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

    def _config_json(self) -> dict[str, Any] | None:
        if self._folder is not None and self._folder.child("config.json").exists():
            obj = self._folder.child("config.json").read_json()
            if isinstance(obj, dict):
                return obj
        return None

    def config(self) -> dict[str, Any]:
        self.tensors()
        obj = self._config_json()
        return obj if obj is not None else dict(self._config)

    @property  # computed here: config.json when present, else the pickle's own key
    def config_source(self) -> str:  # type: ignore[override]
        self.tensors()
        if self._config_json() is not None:
            return "config.json"
        return self._config_key or "config"

    def close(self) -> None:
        for arc in self._archives.values():
            arc.src.close()
        self._archives.clear()
