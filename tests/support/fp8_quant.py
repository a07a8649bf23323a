"""FP8 block quantization the way DeepSeek-V3's release is made, for tests and the benchmark.

Every linear weight ``X.weight`` ([out, in]) of the decoder layers (trunk and MTP) becomes
``float8_e4m3fn`` with a float32 ``X.weight_scale_inv`` of shape [ceil(out/b0), ceil(in/b1)]:
per block, scale_inv = amax / 448 and the stored value is ``(w / scale_inv).to(float8_e4m3fn)``
(torch's own cast). Embeddings and norms stay float32, as in the releases. ``dequantized``
computes the true weights independently of ckpt-audit: torch's fp8 -> float32 cast, scales
expanded with ``np.repeat`` over both axes, one float32 multiply.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

FP8_MAX = 448.0


def is_linear(name: str, arr: np.ndarray) -> bool:
    return arr.ndim == 2 and name.startswith("model.layers.") and name.endswith("proj.weight")


def quantize(w: np.ndarray, block: tuple[int, int]) -> tuple[Any, np.ndarray]:
    """(float8_e4m3fn torch tensor, float32 scale_inv) of one [out, in] weight."""
    import torch

    b0, b1 = block
    rows, cols = w.shape
    nb0, nb1 = -(-rows // b0), -(-cols // b1)
    scale = np.empty((nb0, nb1), np.float32)
    q = np.empty_like(w, dtype=np.float32)
    for i in range(nb0):
        for j in range(nb1):
            blk = w[i * b0 : (i + 1) * b0, j * b1 : (j + 1) * b1]
            s = np.float32(max(float(np.abs(blk).max()), 1e-12) / FP8_MAX)
            scale[i, j] = s
            q[i * b0 : (i + 1) * b0, j * b1 : (j + 1) * b1] = np.clip(blk / s, -FP8_MAX, FP8_MAX)
    return torch.from_numpy(q).to(torch.float8_e4m3fn), scale


def expand(scale: np.ndarray, shape: tuple[int, ...], block: tuple[int, int]) -> np.ndarray:
    b0, b1 = block
    return np.repeat(np.repeat(scale, b0, axis=0), b1, axis=1)[: shape[0], : shape[1]]


def quantize_checkpoint(src: Path, out: Path, block: tuple[int, int]) -> dict[str, np.ndarray]:
    """Write ``out`` = ``src`` (config.json + model.safetensors) in the DeepSeek-V3 FP8 layout.

    Returns the dequantized weights (every tensor, float32): what the FP8 checkpoint means.
    """
    import torch
    from safetensors.numpy import load_file
    from safetensors.torch import save_file

    tensors = load_file(str(src / "model.safetensors"))
    stored: dict[str, Any] = {}
    truth: dict[str, np.ndarray] = {}
    for name, w in tensors.items():
        if is_linear(name, w):
            q, scale = quantize(w.astype(np.float32), block)
            stored[name] = q
            stored[name + "_scale_inv"] = torch.from_numpy(scale)
            truth[name] = (q.float().numpy() * expand(scale, w.shape, block)).astype(np.float32)
        else:
            stored[name] = torch.from_numpy(np.ascontiguousarray(w))
            truth[name] = w
    out.mkdir(parents=True, exist_ok=True)
    cfg = json.loads((src / "config.json").read_text())
    cfg["quantization_config"] = {"quant_method": "fp8", "fmt": "e4m3",
                                  "activation_scheme": "dynamic",
                                  "weight_block_size": list(block)}
    (out / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
    save_file(stored, str(out / "model.safetensors"), metadata={"format": "pt"})
    return truth
