"""DeepSpeed engine checkpoints: ``latest`` + ``global_stepN/mp_rank_00_model_states.pt``.

``engine.save_checkpoint`` writes a tag folder (``latest`` names it) with
``mp_rank_TT_model_states.pt`` holding the model under ``module`` (ZeRO stages 0-2), and
``*_optim_states.pt`` partitions. Under ZeRO-3 each rank's model file is
``zero_pp_rank_R_mp_rank_TT_model_states.pt`` and ``module`` holds empty placeholders: the
values, gains included, exist only flattened inside the optimizer partitions. Those are read
by :mod:`ckpt_audit.readers.deepspeed_zero3` (only each gain's ranges, as ``zero_to_fp32.py``
lays them out). Where that is impossible (partitions missing, an old layout that keeps ZeRO-3
placeholders in ``mp_rank_00_model_states.pt``) the reader refuses with a message that says to
run DeepSpeed's ``zero_to_fp32.py`` and audit its output.

A folder that also holds consolidated weights (``model.safetensors``, ``pytorch_model.bin``,
as the Hugging Face Trainer writes) is left to those readers; ``--format-hint deepspeed`` reads
the engine's own files instead.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from ckpt_audit.errors import CkptAuditError, FormatError
from ckpt_audit.readers.base import CheckpointReader
from ckpt_audit.readers.deepspeed_zero3 import Zero3Layout
from ckpt_audit.readers.megatron_common import folder_exists, present
from ckpt_audit.readers.safe_pickle import TensorRef, flatten_state
from ckpt_audit.readers.signatures import DEEPSPEED_LATEST as LATEST
from ckpt_audit.readers.signatures import DEEPSPEED_STATES_SUFFIX as STATES
from ckpt_audit.readers.torch_reader import strip_prefixes
from ckpt_audit.readers.torch_zip import TorchArchive
from ckpt_audit.records import Finding, Severity, TensorInfo
from ckpt_audit.storage import Location

_STATES = re.escape(STATES)  # every model-states file ends so
MODEL_FILE = re.compile(rf"^mp_rank_(\d+)_{_STATES}$")
ZERO3_FILE = re.compile(rf"^zero_pp_rank_(\d+)_mp_rank_(\d+)_{_STATES}$")
OPTIM_FILE = re.compile(r"^.*_optim_states\.pt$")
PIPE_FILE = re.compile(rf"^layer_\d+-model(?:_\d+)?-{_STATES}$|^layer_\d+-{_STATES}$")
#: what a tag folder holds first, probed where the storage cannot list (HTTP)
TAG_PROBES = (f"mp_rank_00_{STATES}", f"zero_pp_rank_0_mp_rank_00_{STATES}")
CONSOLIDATED = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")


def _tag_folder(loc: Location) -> Location:
    """The tag folder: ``latest``'s target in a run folder, else ``loc`` itself."""
    latest = loc.child(LATEST)
    if not latest.exists() or latest.is_dir():
        return loc
    tag = latest.read_bytes(limit=4096).decode("utf-8", "replace").strip()
    if not tag or "/" in tag or tag.startswith(".."):
        raise FormatError(f"'latest' holds {tag[:40]!r}, not a tag folder name", latest.display)
    target = loc.child(tag)
    if not folder_exists(target, TAG_PROBES):
        raise FormatError(f"'latest' points to tag folder {tag!r}, which does not exist",
                          latest.display)
    return target


def _is_tag_folder(names: list[str]) -> bool:
    return any(MODEL_FILE.match(n) or ZERO3_FILE.match(n) or PIPE_FILE.match(n) for n in names)


class DeepSpeedReader(CheckpointReader):
    """Reads ``module`` from ``mp_rank_00_model_states.pt``; refuses ZeRO-3 with a way out."""

    format = "deepspeed"
    config_source = "config.json"

    def __init__(self, loc: Location) -> None:
        super().__init__(loc)
        self.run_folder = loc
        self.tag = _tag_folder(loc)
        self._arc: TorchArchive | None = None
        self._refs: dict[str, TensorRef] = {}
        self._infos: dict[str, TensorInfo] | None = None
        self._findings_extra: list[Finding] = []
        self._zero3: Zero3Layout | None = None
        self._zero3_names: dict[str, str] = {}

    @classmethod
    def detect(cls, loc: Location) -> bool:
        if not loc.is_dir():
            return False
        names = loc.listdir()
        if any(n in names for n in CONSOLIDATED):
            return False
        if LATEST in names:
            tag = _tag_folder(loc)
            return _is_tag_folder(tag.listdir()) or bool(present(tag, TAG_PROBES))
        return _is_tag_folder(names) or bool(present(loc, TAG_PROBES))

    def _open(self) -> TorchArchive:
        if self._arc is not None:
            return self._arc
        names = self._tag_names()
        models = sorted(n for n in names if MODEL_FILE.match(n))
        zero3 = sorted(n for n in names if ZERO3_FILE.match(n))
        if not models and zero3:
            self._zero3 = Zero3Layout(self.tag, names)
            self._arc = self._zero3.archive(zero3[0])
            return self._arc
        if not models:
            if any(PIPE_FILE.match(n) for n in names):
                raise FormatError("DeepSpeed pipeline-parallel layout (layer_*-model_states.pt) "
                                  "is not supported; convert it with DeepSpeed's "
                                  "zero_to_fp32.py or your framework's exporter", self.tag.display)
            raise FormatError("no mp_rank_*_model_states.pt in this DeepSpeed tag folder",
                              self.tag.display)
        if len(models) > 1:
            self._findings_extra = [Finding(
                Severity.INFO, "model-parallel", None,
                f"{len(models)} model-parallel rank files; gains read from {models[0]}",
            )]
        self._arc = TorchArchive(self.tag.child(models[0]).open())
        tree = self._arc.tree
        if not isinstance(tree, dict) or not isinstance(tree.get("module"), dict):
            raise FormatError("model states file has no 'module' state dict", self._arc.src.name)
        if _zero_stage(tree) == 3 or _placeholders(tree):
            self._refuse_zero3(models[0], names)
        return self._arc

    def _tag_names(self) -> list[str]:
        """The tag folder's files: its listing, or (HTTP, no listing) probes of the names
        DeepSpeed writes, every data-parallel rank's for ZeRO-3 (``dp_world_size``)."""
        names = self.tag.listdir()
        if _is_tag_folder(names):
            return names
        names = present(self.tag, TAG_PROBES)
        if names == [TAG_PROBES[1]]:
            arc = TorchArchive(self.tag.child(names[0]).open())
            try:
                tree = arc.tree
            finally:
                arc.src.close()
            world = tree.get("dp_world_size") if isinstance(tree, dict) else None
            world = world if isinstance(world, int) and 0 < world <= 65536 else 1
            names = present(self.tag, [
                f"{pre}zero_pp_rank_{r}_mp_rank_00_{kind}_states.pt"
                for r in range(world) for pre, kind in (("", "model"), ("", "optim"),
                                                        ("bf16_", "optim"))])
        return names

    def _refuse_zero3(self, model_file: str, names: list[str]) -> None:
        parts = [n for n in names if OPTIM_FILE.match(n)]
        script = self.run_folder.child("zero_to_fp32.py")
        found = (f"found at {script.display}" if script.exists()
                 else "DeepSpeed writes it into the run folder")
        raise CkptAuditError(
            f"ZeRO-3 checkpoint: '{model_file}' holds only empty placeholders; the gains live "
            f"in the ZeRO-3 optimizer partitions ({len(parts)} *_optim_states.pt files), which "
            f"ckpt-audit does not reassemble. Consolidate them with DeepSpeed's zero_to_fp32.py "
            f"({found}): python zero_to_fp32.py {self.run_folder.display} OUT_DIR "
            "--safe_serialization, then run 'ckpt-audit audit OUT_DIR'",
            self.tag.display,
        )

    def tensors(self) -> Mapping[str, TensorInfo]:
        if self._infos is None:
            arc = self._open()
            module = arc.tree.get("module") if isinstance(arc.tree, dict) else None
            infos: dict[str, TensorInfo] = {}
            if self._zero3 is not None:
                z = self._zero3
                src = z.tag.child(z.optim_files[0]).display
                for name, p in z.params.items():
                    infos[strip_prefixes(name)] = TensorInfo(strip_prefixes(name), p.shape,
                                                             "F32", src)
                    self._zero3_names[strip_prefixes(name)] = name
                self._findings_extra.append(Finding(
                    Severity.INFO, "zero3-partitions", None,
                    f"ZeRO-3: values read from the fp32 master partitions of {z.world} "
                    "data-parallel rank(s)",
                ))
            for key, ref in flatten_state(module if isinstance(module, dict) else {},
                                          arc.src.name).items():
                name = strip_prefixes(key)
                if name in infos:
                    continue  # a ZeRO-3 placeholder of a partitioned parameter
                infos[name] = TensorInfo(name, ref.shape, ref.dtype, arc.src.name)
                self._refs[name] = ref
            self._infos = infos
            self.findings.extend(self._findings_extra)
        return self._infos

    def read(self, name: str) -> np.ndarray:
        self.tensors()
        if self._zero3 is not None and name in self._zero3_names:
            return self._zero3.read(self._zero3_names[name])
        ref = self._refs.get(name)
        if ref is None:
            raise FormatError(f"no tensor named {name!r}", self.display)
        return self._open().read_tensor(ref)

    def read_many(self, names: Iterable[str]) -> dict[str, np.ndarray]:
        return {n: self.read(n) for n in names}

    def config(self) -> dict[str, Any]:
        self.tensors()
        cfg = self.run_folder.child("config.json")
        if cfg.exists():
            obj = cfg.read_json()
            if isinstance(obj, dict):
                return obj
        return {}

    def close(self) -> None:
        if self._zero3 is not None:
            self._zero3.close()
            self._arc = None
        if self._arc is not None:
            self._arc.src.close()
            self._arc = None


def _zero_stage(tree: dict[str, Any]) -> int | None:
    cfg = tree.get("ds_config")
    zero = cfg.get("zero_optimization") if isinstance(cfg, dict) else None
    stage = zero.get("stage") if isinstance(zero, dict) else None
    return stage if isinstance(stage, int) else None


def _placeholders(tree: dict[str, Any]) -> bool:
    """Every module tensor empty while ``param_shapes`` records real shapes (ZeRO-3)."""
    refs = list(flatten_state(tree["module"], "DeepSpeed model states").values())
    shapes = tree.get("param_shapes")
    return bool(refs) and bool(shapes) and all(
        int(np.prod(r.shape)) == 0 for r in refs
    )
