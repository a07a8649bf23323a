"""Meta's original Llama release: ``consolidated.00.pth`` … ``.NN.pth`` + ``params.json``.

Each file is one model-parallel rank's state dict (torch zip or legacy, read through the
allowlist). The files are one checkpoint: every rank must hold the same names; a tensor whose
Meta splits (embeddings, attention and feed-forward matrices, output) is concatenated along
its split dimension on read; every other tensor (the norms) is replicated, and its copies are
compared like Megatron's tensor-parallel replicas (``tp-mismatch``, fail). ``params.json``
gives d_model (``dim``). Names: ``norm`` (final), ``layers.N.attention_norm`` / ``ffn_norm``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from ckpt_audit.errors import FormatError
from ckpt_audit.readers.replicas import replica_findings
from ckpt_audit.readers.safe_pickle import TensorRef
from ckpt_audit.readers.signatures import META_PARAMS as PARAMS
from ckpt_audit.readers.signatures import meta_folder
from ckpt_audit.readers.torch_reader import TorchReader, find_state_dict
from ckpt_audit.records import TensorInfo
from ckpt_audit.storage import Location

#: Meta's model-parallel split dimension by name suffix (llama/model.py: ParallelEmbedding on
#: dim 1, ColumnParallelLinear on 0, RowParallelLinear on 1); everything else is replicated.
PARTITION_DIM: tuple[tuple[str, int], ...] = (
    ("tok_embeddings.weight", 1), ("output.weight", 0), ("attention.wq.weight", 0),
    ("attention.wk.weight", 0), ("attention.wv.weight", 0), ("attention.wo.weight", 1),
    ("feed_forward.w1.weight", 0), ("feed_forward.w3.weight", 0),
    ("feed_forward.w2.weight", 1),
)
CONSOLIDATED = re.compile(r"^consolidated\.(\d{2,})\.pth$")


class MetaReader(TorchReader):
    """Reads a Meta-style folder of ``consolidated.NN.pth`` model-parallel ranks."""

    format = "meta"
    config_source = "params.json"
    accepts_state_key = False

    def __init__(self, loc: Location) -> None:
        super().__init__(loc)
        self._copies: dict[str, list[tuple[str, TensorRef]]] = {}
        self._split: dict[str, int] = {}
        self._checked: set[str] = set()

    @classmethod
    def detect(cls, loc: Location) -> bool:
        if not loc.is_dir():
            return False
        names = loc.listdir()
        return meta_folder(names) and any(CONSOLIDATED.match(n) for n in names)

    def _file_locations(self, loc: Location) -> dict[str, Location]:
        if not loc.is_dir():
            raise FormatError("a Meta checkpoint is a folder with params.json", loc.display)
        ranks = sorted((int(m.group(1)), n) for n in loc.listdir()
                       if (m := CONSOLIDATED.match(n)))
        for want, (got, _) in enumerate(ranks):
            if got != want:
                raise FormatError(f"model-parallel rank file consolidated.{want:02d}.pth is "
                                  f"missing ({len(ranks)} rank files found)", loc.display)
        return {n: loc.child(n) for _, n in ranks}

    def tensors(self) -> Mapping[str, TensorInfo]:
        if self._infos is None:
            per_rank = {shard: find_state_dict(self.archive(shard).tree, None,
                                               self._files[shard].display)
                        for shard in self._files}
            first_shard = next(iter(self._files))
            first = per_rank[first_shard]
            for shard, sd in per_rank.items():
                if set(sd) != set(first):
                    odd = sorted(set(sd) ^ set(first))[:3]
                    raise FormatError(f"rank files do not hold the same tensors ({first_shard} vs "
                                      f"{shard}: {', '.join(odd)})", self._files[shard].display)
            infos: dict[str, TensorInfo] = {}
            for name, ref in first.items():
                copies = [(shard, per_rank[shard][name]) for shard in self._files]
                self._copies[name] = copies
                shape = list(ref.shape)
                dim = next((d for suffix, d in PARTITION_DIM if name.endswith(suffix)), None)
                if len(copies) > 1 and dim is not None and dim < len(shape):
                    self._split[name] = dim
                    shape[dim] = sum(c.shape[dim] for _, c in copies)
                infos[name] = TensorInfo(name, tuple(shape), ref.dtype,
                                         self._files[first_shard].display)
            self._infos = infos
        return self._infos

    def read(self, name: str) -> np.ndarray:
        self.tensors()
        copies = self._copies.get(name)
        if copies is None:
            raise FormatError(f"no tensor named {name!r}", self.display)
        arrays = [self.archive(shard).read_tensor(ref) for shard, ref in copies]
        if name in self._split:
            return np.concatenate(arrays, axis=self._split[name])
        if len(arrays) > 1 and name not in self._checked:
            self._checked.add(name)
            self.findings.extend(replica_findings(name, [s for s, _ in copies], arrays))
        return arrays[0]

    def read_many(self, names: Iterable[str]) -> dict[str, np.ndarray]:
        return {n: self.read(n) for n in names}

    def config(self) -> dict[str, Any]:
        obj = self.loc.child(PARAMS).read_json()
        if not isinstance(obj, dict):
            raise FormatError("params.json is not a JSON object", self.loc.child(PARAMS).display)
        return obj
