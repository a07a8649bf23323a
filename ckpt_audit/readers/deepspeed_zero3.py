"""Gains of a DeepSpeed ZeRO-3 checkpoint, read from the optimizer partitions.

Under ZeRO-3 ``module`` holds empty placeholders. The trained values are the fp32 master copies
in each data-parallel rank's ``zero_pp_rank_R_mp_rank_TT_optim_states.pt``
(``optimizer_state_dict.fp32_flat_groups``: one flat fp32 tensor per parameter group). The
layout is the one DeepSpeed's own ``zero_to_fp32.py`` undoes: with W ranks, every parameter of
``numel`` elements is cut into W partitions of ``ceil(numel / W)`` (the last one padded); rank
R's flat groups, concatenated, hold its partition of every parameter in ``param_shapes`` order.
So parameter p at running offset o is ``cat(flat_R[o : o + ceil(numel/W)] for R in ranks)``
truncated to ``numel``. We read exactly those W ranges per gain, nothing else of the (huge)
partition files. Frozen parameters are not in the optimizer: each rank's model-states file
keeps its fragment under ``frozen_param_fragments``.
"""

from __future__ import annotations

import math
import re
from typing import Any

import numpy as np

from ckpt_audit.errors import CkptAuditError, FormatError
from ckpt_audit.readers import safe_pickle
from ckpt_audit.readers.safe_pickle import TensorRef
from ckpt_audit.readers.torch_zip import TorchArchive
from ckpt_audit.records import frozen
from ckpt_audit.storage import Location

ZERO3_MODEL = re.compile(r"^zero_pp_rank_(\d+)_mp_rank_(\d+)_model_states\.pt$")
ZERO3_OPTIM = re.compile(r"^(?:bf16_)?zero_pp_rank_(\d+)_mp_rank_(\d+)_optim_states\.pt$")

#: DeepSpeed globals inside optimizer/model-states pickles, made inert.
for _mod, _name in (
    ("deepspeed.runtime.fp16.loss_scaler", "LossScaler"),
    ("deepspeed.runtime.fp16.loss_scaler", "DynamicLossScaler"),
    ("deepspeed.runtime.zero.config", "ZeroStageEnum"),
    ("deepspeed.utils.tensor_fragment", "fragment_address"),
    ("deepspeed.checkpoint.constants", "PARAM_SHAPES"),
):
    safe_pickle.allow_inert(_mod, _name)


@frozen
class Zero3Param:
    """Where one parameter's partitions are: its running offset in every rank's flat groups."""

    name: str
    shape: tuple[int, ...]
    offset: int  # in each rank's concatenated flat groups; -1 for a frozen parameter


class Zero3Layout:
    """The ZeRO-3 tag folder: model-states and optimizer files of every data-parallel rank."""

    def __init__(self, tag: Location, names: list[str], mp_rank: int = 0) -> None:
        self.tag = tag
        models = _by_rank(names, ZERO3_MODEL, mp_rank)
        optims = _by_rank(names, ZERO3_OPTIM, mp_rank)
        if not models:
            raise FormatError("no zero_pp_rank_*_model_states.pt in this tag folder", tag.display)
        self.world = len(models)
        for what, files in (("model states", models), ("optimizer partition", optims)):
            missing = [r for r in range(self.world) if r not in files]
            if files and missing:
                raise FormatError(f"missing {what} file of data-parallel rank {missing[0]} "
                                  f"(found {len(files)} of {self.world})", tag.display)
        if not optims:
            raise CkptAuditError(
                "ZeRO-3 checkpoint without its *_optim_states.pt partitions: the gains exist "
                "only there (module holds empty placeholders), so they cannot be audited",
                tag.display,
            )
        self.model_files = models
        self.optim_files = optims
        self._archives: dict[str, TorchArchive] = {}
        self.params: dict[str, Zero3Param] = {}
        self._groups: dict[int, list[TensorRef]] = {}
        self._build()

    def archive(self, fname: str) -> TorchArchive:
        arc = self._archives.get(fname)
        if arc is None:
            arc = TorchArchive(self.tag.child(fname).open())
            self._archives[fname] = arc
        return arc

    def model_tree(self, rank: int = 0) -> dict[str, Any]:
        tree = self.archive(self.model_files[rank]).tree
        if not isinstance(tree, dict):
            raise FormatError("model states file is not a dict", self.model_files[rank])
        return tree

    def _flat_groups(self, rank: int) -> list[TensorRef]:
        if rank not in self._groups:
            arc = self.archive(self.optim_files[rank])
            tree = arc.tree
            osd = tree.get("optimizer_state_dict") if isinstance(tree, dict) else None
            groups = osd.get("fp32_flat_groups") if isinstance(osd, dict) else None
            if not isinstance(groups, list) or not all(isinstance(g, TensorRef) and
                                                       len(g.shape) == 1 for g in groups):
                raise FormatError("optimizer partition has no fp32_flat_groups", arc.src.name)
            self._groups[rank] = groups
        return self._groups[rank]

    def _build(self) -> None:
        tree = self.model_tree(0)
        shapes = tree.get("param_shapes")
        if isinstance(shapes, dict):
            shapes = [shapes]
        if not isinstance(shapes, list):
            raise FormatError("model states file has no param_shapes", self.model_files[0])
        offset = 0
        for group in shapes:
            for name, shape in dict(group).items():
                shp = tuple(int(s) for s in shape)
                self.params[str(name)] = Zero3Param(str(name), shp, offset)
                offset += math.ceil(math.prod(shp) / self.world)
        for rank in range(self.world):
            total = sum(g.shape[0] for g in self._flat_groups(rank))
            if total != offset:
                raise FormatError(
                    f"optimizer partition holds {total} fp32 values but param_shapes need "
                    f"{offset} per rank (world size {self.world})",
                    self.optim_files[rank],
                )
        frozen = tree.get("frozen_param_shapes") or {}
        for name, shape in dict(frozen).items():
            self.params[str(name)] = Zero3Param(str(name), tuple(int(s) for s in shape), -1)

    def read(self, name: str) -> np.ndarray:
        p = self.params[name]
        numel = math.prod(p.shape)
        parts = [self._frozen_part(name, r) if p.offset < 0 else
                 self._partition(r, p.offset, math.ceil(numel / self.world))
                 for r in range(self.world)]
        flat = np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)
        if flat.size < numel:
            raise FormatError(f"partitions of {name!r} hold {flat.size} of {numel} values",
                              self.tag.display)
        return flat[:numel].reshape(p.shape)

    def _partition(self, rank: int, offset: int, length: int) -> np.ndarray:
        arc = self.archive(self.optim_files[rank])
        for g in self._flat_groups(rank):
            if offset < g.shape[0]:
                if offset + length > g.shape[0]:
                    raise FormatError("a parameter partition crosses a flat-group boundary",
                                      arc.src.name)
                view = TensorRef(g.storage, g.offset + offset * g.stride[0], (length,),
                                 g.stride, g.dtype)
                return arc.read_tensor(view)
            offset -= g.shape[0]
        raise FormatError("parameter offset beyond the flat groups", arc.src.name)

    def _frozen_part(self, name: str, rank: int) -> np.ndarray:
        tree = self.model_tree(rank)
        frags = tree.get("frozen_param_fragments") or {}
        ref = dict(frags).get(name)
        if not isinstance(ref, TensorRef):
            raise FormatError(f"no frozen fragment of {name!r}", self.model_files[rank])
        return self.archive(self.model_files[rank]).read_tensor(ref).reshape(-1)

    def close(self) -> None:
        for arc in self._archives.values():
            arc.src.close()
        self._archives.clear()


def _by_rank(names: list[str], pattern: re.Pattern[str], mp_rank: int) -> dict[int, str]:
    out: dict[int, str] = {}
    for n in names:
        m = pattern.match(n)
        if m and int(m.group(2)) == mp_rank:
            out[int(m.group(1))] = n
    return out
