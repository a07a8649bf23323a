"""Megatron-LM's legacy checkpoint layout (``--ckpt-format torch``).

``iter_XXXXXXX/mp_rank_TT[_PPP][_EEE]/model_optim_rng.pt``: one torch zip per (tensor, pipeline,
expert) rank, each holding ``args`` (an ``argparse.Namespace``), ``iteration`` and the rank's
state dict under ``model`` (or ``model0``, ``model1``... with a virtual pipeline). What this
reader does on top of reading the pickles through the allowlist:

- Layer numbers are local to each pipeline chunk; they become global by walking the chunks in
  model order (virtual stage, then pipeline stage) and adding the layers seen before, which holds
  for even, uneven and interleaved splits. MTP layers (``mtp.layers.K``) keep their numbers.
- Tensors split across tensor-parallel ranks are listed with their full shape and concatenated on
  read along Megatron's partition dimension; everything else (norm gains included) is
  replicated, so each copy is read and compared: copies that are not bit-identical are a
  ``tp-mismatch`` finding (severity fail) that names the rank folders.
- Every expected rank folder must be there (counts from ``args``); a gap is an error.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from ckpt_audit.errors import FormatError
from ckpt_audit.readers.base import CheckpointReader
from ckpt_audit.readers.megatron_common import (
    args_config,
    present,
    resolve_iteration,
    uses_offset_gains,
)
from ckpt_audit.readers.replicas import replica_findings
from ckpt_audit.readers.safe_pickle import TensorRef, flatten_state
from ckpt_audit.readers.signatures import RANK_DIR_PREFIX
from ckpt_audit.readers.torch_zip import TorchArchive
from ckpt_audit.records import Convention, Finding, Severity, TensorInfo, frozen
from ckpt_audit.storage import Location

RANK_DIR = re.compile(rf"^{RANK_DIR_PREFIX}(\d{{2}})(?:_(\d{{3}}))?(?:_(\d{{3}}))?$")
RANK_FILES = ("model_optim_rng.pt", "model_rng.pt")
LAYER = re.compile(r"^(decoder\.layers\.)(\d+)(\..*)$")
MODEL_KEY = re.compile(r"^model(\d*)$")
FIRST_RANKS = (f"{RANK_DIR_PREFIX}00", f"{RANK_DIR_PREFIX}00_000")

#: name suffix -> dimension along which tensor parallelism splits it (the rest is replicated).
PARTITION_DIM: tuple[tuple[str, int], ...] = (
    ("word_embeddings.weight", 0), ("output_layer.weight", 0), ("eh_proj.weight", 0),
    ("linear_qkv.weight", 0), ("linear_qkv.bias", 0), ("linear_fc1.weight", 0),
    ("linear_fc1.bias", 0), ("linear_q_proj.weight", 0), ("linear_q_up_proj.weight", 0),
    ("linear_kv_up_proj.weight", 0), ("linear_proj.weight", 1), ("linear_fc2.weight", 1),
    ("mixer.in_proj.weight", 0), ("mixer.out_proj.weight", 1), ("mixer.conv1d.weight", 0),
    ("mixer.conv1d.bias", 0), ("mixer.A_log", 0), ("mixer.D", 0), ("mixer.dt_bias", 0),
    ("mixer.norm.weight", 0),  # the Mamba gated norm is the one split norm
)


def partition_dim(name: str) -> int | None:
    """Megatron's tensor-parallel split dimension for ``name``, ``None`` when replicated."""
    for suffix, dim in PARTITION_DIM:
        if name.endswith(suffix):
            return dim
    return None


@frozen
class _Copy:
    """One rank's copy of a tensor: which rank folder, which archive, where in it."""

    rank_dir: str
    tp: int
    ref: TensorRef


class MegatronLegacyReader(CheckpointReader):
    """Reads ``mp_rank_*/model_optim_rng.pt`` files of one Megatron iteration."""

    format = "megatron-legacy"
    config_source = "megatron args"

    def __init__(self, loc: Location) -> None:
        super().__init__(loc)
        self.iter_loc = resolve_iteration(loc)
        #: a lone model_optim_rng.pt rather than an iteration folder
        self.single = loc.name in RANK_FILES and not loc.is_dir()
        self._archives: dict[str, TorchArchive] = {}
        self._copies: dict[str, list[_Copy]] = {}
        self._infos: dict[str, TensorInfo] | None = None
        self._config: dict[str, Any] = {}
        self._checked: set[str] = set()
        self._replicas_done = False
        self.layout: dict[str, int] = {}

    @classmethod
    def detect(cls, loc: Location) -> bool:
        if not loc.is_dir():
            return loc.name in RANK_FILES
        target = resolve_iteration(loc)
        if target.is_dir() and any(RANK_DIR.match(n) for n in target.listdir()):
            return True
        return bool(present(target, [f"{d}/{RANK_FILES[0]}" for d in FIRST_RANKS]))

    # -- files -----------------------------------------------------------------------------
    def _rank_dirs(self) -> dict[tuple[int, int, int], str]:
        """(tp, pp, ep) -> folder name, with the pipeline/expert reading fixed by ``args``."""
        found: dict[tuple[int, int, int], str] = {}
        if self.single:
            return self._single_file()
        raw = [(m, n) for n in self.iter_loc.listdir() if (m := RANK_DIR.match(n))]
        if not raw:
            raw = [(m, n) for n in self._probe_rank_dirs() if (m := RANK_DIR.match(n))]
        if not raw:
            raise FormatError("no mp_rank_* folders in this iteration folder",
                              self.iter_loc.display)
        first = self._archive(raw[0][1])
        args = first.tree.get("args") if isinstance(first.tree, dict) else None
        cfg = args_config(args)
        self._config = cfg
        pp_size = int(cfg.get("pipeline_model_parallel_size", 0) or 0)
        for m, name in raw:
            tp = int(m.group(1))
            a, b = m.group(2), m.group(3)
            if b is not None:
                pp, ep = int(a), int(b)
            elif a is not None and pp_size == 1:
                pp, ep = 0, int(a)  # mp_rank_TT_EEE: expert parallel without a pipeline
            else:
                pp, ep = (int(a) if a is not None else 0), 0
            found[(tp, pp, ep)] = name
        self._check_complete(found, cfg)
        return found

    def _check_complete(self, found: dict[tuple[int, int, int], str], cfg: dict[str, Any]) -> None:
        tps = {k[0] for k in found}
        pps = {k[1] for k in found}
        tp_n = max(int(cfg.get("tensor_model_parallel_size") or 0), max(tps) + 1)
        pp_n = max(int(cfg.get("pipeline_model_parallel_size") or 0), max(pps) + 1)
        for pp in range(pp_n):
            for tp in range(tp_n):
                if (tp, pp, 0) not in found:  # expert rank 0 holds the (non-expert) gains
                    name = f"mp_rank_{tp:02d}" + (f"_{pp:03d}" if pp_n > 1 else "")
                    raise FormatError(
                        f"missing rank folder {name} (expected tensor-parallel ranks 0..{tp_n - 1}"
                        f" x pipeline stages 0..{pp_n - 1})",
                        self.iter_loc.display,
                    )
        self.layout = {"tensor_parallel": tp_n, "pipeline_parallel": pp_n}

    def _probe_rank_dirs(self) -> list[str]:
        """Rank folders where the storage cannot list (HTTP): the first rank's ``args`` say how
        many tensor ranks and stages there are; each expected folder is probed."""
        first = present(self.iter_loc, [f"{d}/{RANK_FILES[0]}" for d in FIRST_RANKS])
        if not first:
            return []
        tree = self._archive(first[0].split("/")[0]).tree
        cfg = args_config(tree.get("args") if isinstance(tree, dict) else None)
        tp_n = int(cfg.get("tensor_model_parallel_size") or 1)
        pp_n = int(cfg.get("pipeline_model_parallel_size") or 1)
        names = [f"mp_rank_{t:02d}" + (f"_{p:03d}" if pp_n > 1 else "")
                 for p in range(pp_n) for t in range(tp_n)]
        return [n.split("/")[0] for n in present(self.iter_loc,
                                                 [f"{n}/{RANK_FILES[0]}" for n in names])]

    def _single_file(self) -> dict[tuple[int, int, int], str]:
        """One ``model_optim_rng.pt`` given on its own: one rank, said so in the findings."""
        arc = self._archive(self.iter_loc.name)
        self._config = args_config(arc.tree.get("args") if isinstance(arc.tree, dict) else None)
        tp_n = int(self._config.get("tensor_model_parallel_size") or 1)
        pp_n = int(self._config.get("pipeline_model_parallel_size") or 1)
        self.layout = {"tensor_parallel": 1, "pipeline_parallel": 1}
        if pp_n > 1:
            self._findings.append(Finding(
                Severity.WARN, "single-rank", None,
                f"one rank file of a {pp_n}-stage pipeline: layer numbers are local to its "
                "stage; point at the iteration folder for global numbers",
            ))
        elif tp_n > 1:
            self._findings.append(Finding(
                Severity.INFO, "single-rank", None,
                f"one rank file of tensor-parallel size {tp_n}: replicas were not compared; "
                "point at the iteration folder to compare them",
            ))
        return {(0, 0, 0): self.iter_loc.name}

    def _archive(self, rank_dir: str) -> TorchArchive:
        arc = self._archives.get(rank_dir)
        if arc is None and self.single:
            arc = TorchArchive(self.iter_loc.open())
            self._archives[rank_dir] = arc
        if arc is None:
            folder = self.iter_loc.child(rank_dir)
            for fname in RANK_FILES:
                if folder.child(fname).exists():
                    arc = TorchArchive(folder.child(fname).open())
                    break
            else:
                raise FormatError(f"no {RANK_FILES[0]} in this rank folder", folder.display)
            self._archives[rank_dir] = arc
        return arc

    def _chunks(self, rank_dir: str) -> list[tuple[int, dict[str, Any]]]:
        """The model chunks of one rank file as (virtual stage, flat state dict)."""
        tree = self._archive(rank_dir).tree
        if not isinstance(tree, dict):
            raise FormatError("checkpoint is not a dict", self._archive(rank_dir).src.name)
        chunks = []
        for key, val in tree.items():
            m = MODEL_KEY.match(str(key))
            if m and isinstance(val, dict):
                chunks.append((int(m.group(1) or 0), flatten_state(
                    val, self._archive(rank_dir).src.name, skip_suffix="._extra_state")))
        if not chunks:
            raise FormatError("no 'model' state dict in this file",
                              self._archive(rank_dir).src.name)
        return sorted(chunks, key=lambda c: c[0])

    # -- listing ---------------------------------------------------------------------------
    def tensors(self) -> Mapping[str, TensorInfo]:
        if self._infos is not None:
            return self._infos
        ranks = self._rank_dirs()
        pp_n = self.layout["pipeline_parallel"]
        # per pipeline stage: the tp ranks' chunk lists (expert rank 0 only: norms are not
        # expert-parallel)
        stages: dict[int, dict[int, list[tuple[int, dict[str, Any]]]]] = {}
        for (tp, pp, ep), name in sorted(ranks.items()):
            if ep == 0:
                stages.setdefault(pp, {})[tp] = self._chunks(name)
        vp_n = max(len(stages[p][0]) for p in stages)
        self.layout["virtual_pipeline"] = vp_n
        offset = 0
        infos: dict[str, TensorInfo] = {}
        for v in range(vp_n):
            for p in range(pp_n):
                tp_chunks = stages[p]
                if v >= len(tp_chunks[0]):
                    continue
                local = tp_chunks[0][v][1]
                n_layers = len({int(m.group(2)) for k in local if (m := LAYER.match(k))})
                added: list[tuple[str, str]] = []
                for key, ref in local.items():
                    gname = _globalise(key, offset)
                    if gname in self._copies:
                        continue  # e.g. the embedding, kept on the first and the last stage
                    rank_dir = ranks[(0, p, 0)]
                    self._copies[gname] = [_Copy(rank_dir, 0, ref)]
                    infos[gname] = TensorInfo(gname, ref.shape, ref.dtype,
                                              self._archive(rank_dir).src.name)
                    added.append((key, gname))
                for tp in sorted(tp_chunks)[1:]:
                    rank_dir = ranks[(tp, p, 0)]
                    if v >= len(tp_chunks[tp]):
                        raise FormatError(f"rank file has no 'model{v}'", rank_dir)
                    chunk = tp_chunks[tp][v][1]
                    for key, gname in added:
                        ref = chunk.get(key)
                        if ref is None:
                            raise FormatError(f"tensor {key!r} is missing from this rank",
                                              self._archive(rank_dir).src.name)
                        self._copies[gname].append(_Copy(rank_dir, tp, ref))
                offset += n_layers
        expected = self._config.get("num_layers")
        if not self.single and isinstance(expected, int) and offset and offset != expected:
            self._findings.append(Finding(
                Severity.WARN, "layer-count", None,
                f"rank files hold {offset} decoder layers but args.num_layers is {expected}",
            ))
        for name, copies in self._copies.items():
            dim = partition_dim(name)
            if dim is not None and len(copies) > 1:
                shape = list(copies[0].ref.shape)
                if dim < len(shape):
                    shape[dim] = sum(c.ref.shape[dim] for c in copies)
                    infos[name] = TensorInfo(name, tuple(shape), infos[name].dtype,
                                             infos[name].source)
        self._infos = infos
        return infos

    # -- reading ---------------------------------------------------------------------------
    def read(self, name: str) -> np.ndarray:
        self.tensors()
        copies = self._copies.get(name)
        if copies is None:
            raise FormatError(f"no tensor named {name!r}", self.display)
        arrays = [self._archive(c.rank_dir).read_tensor(c.ref) for c in copies]
        dim = partition_dim(name)
        if dim is not None and len(arrays) > 1:
            return np.concatenate(arrays, axis=dim)
        if len(arrays) > 1 and name not in self._checked:
            self._checked.add(name)
            self._compare_replicas(name, copies, arrays)
        return arrays[0]

    def read_many(self, names: Iterable[str]) -> dict[str, np.ndarray]:
        return {n: self.read(n) for n in names}

    @property  # type: ignore[override]
    def findings(self) -> list[Finding]:
        """Reader findings; the first look compares every replicated 1-D tensor across TP ranks.

        Gains (and the other replicated vectors) are a few KB each, so this is cheap and it
        makes ``tp-mismatch`` findings available however the caller orders its reads.
        """
        if getattr(self, "_infos", None) is not None and not self._replicas_done:
            self._replicas_done = True
            for name, copies in self._copies.items():
                vector = len(copies[0].ref.shape) == 1
                if len(copies) > 1 and vector and partition_dim(name) is None:
                    self.read(name)
        return self._findings

    @findings.setter
    def findings(self, value: list[Finding]) -> None:
        self._findings = value

    def _compare_replicas(self, name: str, copies: list[_Copy], arrays: list[np.ndarray]) -> None:
        self._findings.extend(replica_findings(name, [c.rank_dir for c in copies], arrays))

    def config(self) -> dict[str, Any]:
        self.tensors()
        cfg = dict(self._config)
        cfg.update({f"megatron_{k}": v for k, v in self.layout.items()})
        return cfg

    @property
    def convention_hint(self) -> Convention | None:  # type: ignore[override]
        """Offset (γ_eff = 1 + w) when ``args.apply_layernorm_1p`` is set, else unknown."""
        self.tensors()
        return Convention.OFFSET if uses_offset_gains(self._config) else None

    def close(self) -> None:
        for arc in self._archives.values():
            arc.src.close()
        self._archives.clear()


def _globalise(name: str, offset: int) -> str:
    """``decoder.layers.<local>.x`` -> ``decoder.layers.<offset + local>.x``."""
    m = LAYER.match(name)
    if not m:
        return name
    return f"{m.group(1)}{int(m.group(2)) + offset}{m.group(3)}"
