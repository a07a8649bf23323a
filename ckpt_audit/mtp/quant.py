"""Quantized weights for ``accept``: FP8 block-scaled releases dequantized, anything else refused.

DeepSeek-V3/V3.1/R1 and GLM-4.5-FP8 (docs/MTP.md, "Quantized checkpoints") declare
``quantization_config = {"quant_method": "fp8", "weight_block_size": [b0, b1], ...}`` and store
every linear weight ``X.weight`` as ``float8_e4m3fn`` with a float32 ``X.weight_scale_inv`` of
shape ``[ceil(out/b0), ceil(in/b1)]``: the true weight is ``X.weight * scale_inv`` broadcast over
each b0×b1 block, edge blocks partial (DeepSeek-V3 ``inference/kernel.py`` ``weight_dequant``,
transformers ``finegrained_fp8._dequantize_fp8_weight``). :class:`WeightSource` reads tensors
through a checkpoint reader and hands back such weights dequantized to float32, one read group
at a time, so a model is never held twice.

Everything else that is quantized is refused with the method named (exit 2, never a figure):
an unknown ``quant_method``, fp8 without ``weight_block_size``, integer weights (int8 + scales),
float8 weights without scales, scale tensors without a config, GGUF quantized types.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from ckpt_audit.core.layouts import text_config
from ckpt_audit.errors import CkptAuditError
from ckpt_audit.readers.base import CheckpointReader
from ckpt_audit.readers.dtypes import ITEMSIZE
from ckpt_audit.records import TensorInfo, frozen

#: suffix of the per-block inverse scale next to ``X.weight`` (DeepSeek-V3 naming)
SCALE_SUFFIX = "_scale_inv"
#: tensor name endings that only quantization schemes write (scales, packed weights)
_QUANT_NAME_ENDINGS = ("weight_scale_inv", "weight_scale", ".qweight", ".scales", ".qzeros",
                       ".absmax", ".SCB", ".weight_packed")
_FP8 = frozenset({"F8_E4M3", "F8_E5M2"})
#: safetensors dtype name -> torch-style name used in reports
TORCH_NAMES = {"F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16",
               "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2", "I8": "int8",
               "U8": "uint8", "I16": "int16", "I32": "int32", "I64": "int64"}


@frozen
class Quantization:
    """A quantization scheme accept can undo: FP8 with per-block float32 inverse scales."""

    method: str
    block: tuple[int, int]

    def describe(self) -> str:
        return f"{self.method} blocks {self.block[0]}x{self.block[1]}"


def quantization_config(cfg: Mapping[str, Any]) -> dict[str, Any] | None:
    """The checkpoint's ``quantization_config`` (top level or inside ``text_config``)."""
    for c in (cfg, text_config(dict(cfg))):
        for key in ("quantization_config", "compression_config"):
            qc = c.get(key)
            if isinstance(qc, dict):
                return qc
    return None


def detect(cfg: Mapping[str, Any], infos: Mapping[str, TensorInfo],
           display: str) -> Quantization | None:
    """The scheme to undo, None for plain float weights; anything not understood raises."""
    odd = sorted({t.dtype for t in infos.values() if t.dtype not in ITEMSIZE})
    if odd:  # GGUF block-quantized types (Q4_1, Q8_0, ...) and other packed formats
        raise CkptAuditError(f"quantized weights ({', '.join(odd)}): accept runs only float "
                             "weights and FP8 block-scaled ones; use an unquantized export",
                             display)
    qc = quantization_config(cfg)
    if qc is None:
        scaled = sorted(n for n in infos if n.endswith(_QUANT_NAME_ENDINGS))
        if scaled:
            raise CkptAuditError(f"quantization tensors ({scaled[0]}) but no quantization_config "
                                 "in config.json: cannot tell how to dequantize", display)
        return None
    method = str(qc.get("quant_method", "")) or "(no quant_method)"
    if method != "fp8":
        raise CkptAuditError(f"quantization_config quant_method {method!r} is not supported by "
                             "accept (only fp8 with weight_block_size)", display)
    block = qc.get("weight_block_size")
    if not (isinstance(block, list | tuple) and len(block) == 2
            and all(isinstance(b, int) and not isinstance(b, bool) and b > 0 for b in block)):
        raise CkptAuditError(f"quantization_config quant_method 'fp8' with weight_block_size "
                             f"{block!r}: accept dequantizes only per-block scales "
                             "(weight_block_size = [rows, cols])", display)
    fmt = str(qc.get("fmt", "e4m3"))
    if fmt != "e4m3":
        raise CkptAuditError(f"quantization_config quant_method 'fp8' fmt {fmt!r} is not "
                             "supported by accept (only e4m3)", display)
    return Quantization("fp8", (int(block[0]), int(block[1])))


def dequantize_blocks(w: np.ndarray, scale_inv: np.ndarray, block: tuple[int, int]
                      ) -> np.ndarray:
    """``w * scale_inv`` with each scale broadcast over its b0×b1 block of the last two axes.

    Edge blocks are partial: ``scale_inv`` has ``ceil(rows/b0)`` × ``ceil(cols/b1)`` entries.
    Multiplies in float32 in place (one weight-sized buffer), column block by column block.
    """
    b0, b1 = block
    rows, cols = w.shape[-2:]
    out = w if (w.dtype == np.float32 and w.flags.writeable) else w.astype(np.float32)
    s = np.repeat(scale_inv.astype(np.float32, copy=False), b0, axis=-2)[..., :rows, :]
    for j in range(s.shape[-1]):
        out[..., j * b1 : (j + 1) * b1] *= s[..., j : j + 1]
    return out


class WeightSource:
    """A reader's tensors as the model needs them: float, FP8 blocks dequantized, rest refused.

    ``stored`` counts the elements read per stored dtype (for the report's ``stored_dtype``);
    ``dequantized`` counts the tensors whose block scales were applied.
    """

    def __init__(self, reader: CheckpointReader, quant: Quantization | None) -> None:
        self.reader = reader
        self.quant = quant
        self.display = reader.display
        self.stored: Counter[str] = Counter()
        self.dequantized = 0

    def tensors(self) -> Mapping[str, TensorInfo]:
        return self.reader.tensors()

    def _scale_name(self, name: str) -> str | None:
        s = name + SCALE_SUFFIX
        return s if s in self.reader.tensors() else None

    def _check(self, name: str) -> None:
        info = self.reader.tensors()[name]
        scale = self._scale_name(name)
        if not info.is_float:
            sib = next((name.rsplit(".", 1)[0] + "." + e for e in ("weight_scale", "scales")
                        if name.rsplit(".", 1)[0] + "." + e in self.reader.tensors()), None)
            how = f" with {sib}" if sib else ""
            raise CkptAuditError(f"{name} is stored as {TORCH_NAMES.get(info.dtype, info.dtype)}"
                                 f"{how} (integer quantization): accept runs only float weights "
                                 "and FP8 block-scaled ones", self.display)
        if info.dtype in _FP8:
            if self.quant is None:
                raise CkptAuditError(f"{name} is {TORCH_NAMES[info.dtype]} but config.json has no "
                                     "quantization_config: its scale is unknown", self.display)
            if scale is None:
                raise CkptAuditError(f"{name} is {TORCH_NAMES[info.dtype]} but has no "
                                     f"{name}{SCALE_SUFFIX}", self.display)
            if info.dtype != "F8_E4M3":
                raise CkptAuditError(f"{name} is {TORCH_NAMES[info.dtype]}; fp8 block scales are "
                                     "dequantized only for float8_e4m3fn", self.display)
        elif scale is not None:
            raise CkptAuditError(f"{name} is {TORCH_NAMES.get(info.dtype, info.dtype)} but has a "
                                 f"{scale}: not an fp8 block-scaled weight", self.display)

    def read_many(self, names: Iterable[str]) -> dict[str, np.ndarray]:
        names = list(names)
        for n in names:
            self._check(n)
        scales = {n: s for n in names if (s := self._scale_name(n)) is not None}
        arrays = self.reader.read_many(names + sorted(set(scales.values()) - set(names)))
        infos = self.reader.tensors()
        for n in names:
            self.stored[infos[n].dtype] += infos[n].numel
        for n, s in scales.items():
            assert self.quant is not None  # _check refused a scale without a config
            w, sc = arrays[n], arrays[s]
            b0, b1 = self.quant.block
            want = (*w.shape[:-2], -(-w.shape[-2] // b0), -(-w.shape[-1] // b1))
            if w.ndim < 2 or tuple(sc.shape) != want:
                raise CkptAuditError(f"{s} has shape {list(sc.shape)}; weight_block_size "
                                     f"[{b0}, {b1}] over {n} {list(w.shape)} needs "
                                     f"{list(want)}", self.display)
            arrays[n] = dequantize_blocks(w, sc, self.quant.block)
            self.dequantized += 1
        return {n: arrays[n] for n in names}

    def stored_dtype(self) -> str:
        """Stored dtypes of what was read, most elements first (``float8_e4m3fn+float32``)."""
        return "+".join(TORCH_NAMES.get(d, d) for d, _ in self.stored.most_common())
