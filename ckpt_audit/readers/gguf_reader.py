"""GGUF files (llama.cpp): header validated by :mod:`gguf_format`, values decoded via ``gguf``.

Tensor names stay as llama.cpp writes them (``output_norm.weight``, ``blk.N.attn_norm.weight``,
``blk.N.ffn_norm.weight``, ``blk.N.attn_q_norm.weight``, ``blk.N.attn_k_norm.weight``,
``blk.N.post_attention_norm.weight``, ``blk.N.post_ffw_norm.weight``...). Shapes are given in
numpy order (GGUF stores dimensions innermost first). The convention is always ``direct``:
llama.cpp's converter bakes the +1 of Gemma/Nemotron/Qwen3-Next gains into the stored values.
``config()`` carries the metadata with ``hidden_size`` taken from ``{arch}.embedding_length``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, ClassVar

import numpy as np

from ckpt_audit.errors import FormatError
from ckpt_audit.readers.base import CheckpointReader
from ckpt_audit.readers.dtypes import decode
from ckpt_audit.readers.gguf_format import GGUF_MAGIC, GGUFHeader, GGUFTensor, parse_gguf
from ckpt_audit.records import Convention, TensorInfo
from ckpt_audit.storage import ByteSource, Location

#: GGML types that are plain little-endian arrays, by safetensors dtype name
_PLAIN = {0: "F32", 1: "F16", 30: "BF16", 28: "F64", 24: "I8", 25: "I16", 26: "I32", 27: "I64"}

#: metadata key suffix -> config key the audit core understands
_CONFIG_KEYS = {
    "embedding_length": "hidden_size",
    "block_count": "num_hidden_layers",
    "feed_forward_length": "intermediate_size",
    "attention.head_count": "num_attention_heads",
    "attention.head_count_kv": "num_key_value_heads",
    "nextn_predict_layers": "num_nextn_predict_layers",
    "context_length": "max_position_embeddings",
}


def _gguf() -> Any:
    try:
        import gguf
    except ImportError:
        raise FormatError("reading GGUF needs the gguf package: pip install 'ckpt-audit[gguf]'")\
            from None
    return gguf


class GGUFReader(CheckpointReader):
    """A llama.cpp GGUF model file."""

    format = "gguf"
    config_source = "gguf metadata"
    convention_hint: ClassVar[Convention | None] = Convention.DIRECT

    def __init__(self, loc: Location) -> None:
        super().__init__(loc)
        if loc.is_dir():
            raise FormatError("a GGUF model is one file, not a folder", loc.display)
        gguf = _gguf()
        self._gguf = gguf
        self._src: ByteSource = loc.open()
        sizes = {int(t): v for t, v in gguf.GGML_QUANT_SIZES.items()}
        try:
            self.header: GGUFHeader = parse_gguf(self._src, sizes)
        except FormatError as exc:
            raise FormatError(exc.message, loc.display) from None
        self._names = {int(t): t.name for t in gguf.GGMLQuantizationType}
        self._infos = {
            n: TensorInfo(n, t.shape, _PLAIN.get(t.ggml_type) or self._names[t.ggml_type],
                          loc.display)
            for n, t in self.header.tensors.items()
        }

    @classmethod
    def detect(cls, loc: Location) -> bool:
        if loc.is_dir():
            return False
        try:
            src = loc.open()
            try:
                return src.size() >= 24 and src.read(0, 4) == GGUF_MAGIC
            finally:
                src.close()
        except FormatError:
            return False

    def tensors(self) -> Mapping[str, TensorInfo]:
        return self._infos

    def _decode(self, t: GGUFTensor, raw: bytes) -> np.ndarray:
        plain = _PLAIN.get(t.ggml_type)
        if plain is not None:
            return decode(raw, plain, t.shape, self.display)
        qtype = self._gguf.GGMLQuantizationType(t.ggml_type)
        rows = np.frombuffer(raw, dtype=np.uint8).reshape(*t.shape[:-1], -1)
        try:
            out = self._gguf.quants.dequantize(rows, qtype)
        except NotImplementedError:
            raise FormatError(f"cannot dequantise {qtype.name} ({t.name})", self.display) from None
        return np.asarray(out, dtype=np.float32).reshape(t.shape)

    def read(self, name: str) -> np.ndarray:
        return self.read_many([name])[name]

    def read_many(self, names: Iterable[str]) -> dict[str, np.ndarray]:
        names = list(names)
        for n in names:
            if n not in self.header.tensors:
                raise FormatError(f"no tensor named {n!r}", self.display)
        ts = [self.header.tensors[n] for n in names]
        blobs = self._src.read_ranges([(t.start, t.nbytes) for t in ts])
        return {t.name: self._decode(t, raw) for t, raw in zip(ts, blobs, strict=True)}

    def config(self) -> dict[str, Any]:
        meta = self.header.metadata
        cfg: dict[str, Any] = {k: v for k, v in meta.items() if not isinstance(v, dict)}
        arch = meta.get("general.architecture")
        if isinstance(arch, str):
            cfg["model_type"] = arch
            for suffix, key in _CONFIG_KEYS.items():
                value = meta.get(f"{arch}.{suffix}")
                if isinstance(value, int) and not isinstance(value, bool):
                    cfg[key] = value
        return cfg

    def close(self) -> None:
        self._src.close()
