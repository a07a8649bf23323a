"""The embedded demo: a small run of checkpoints written on the spot, with no torch or network.

:func:`write_demo_run` writes a Llama-shaped model (d_model 256, 4 layers, RMSNorm) as real
safetensors files with a ``config.json``, in HF Trainer ``checkpoint-N`` folders:

- ``checkpoint-0``: step 0, every gain all ones (ratio exactly 1);
- ``checkpoint-1000``: healthy shrink of the final norm (ratio ≈ 0.75);
- ``checkpoint-2000``: collapsed final norm (ratio ≈ 0.25);
- ``checkpoint-3000``: exploded final norm (ratio ≈ 2.4);
- ``mtp-model``: a DeepSeek-style checkpoint with one MTP layer (``model.layers.4.*``).

The safetensors writer here is deliberately tiny; tests read its files back with the official
``safetensors`` library to prove the bytes are right.
"""

from __future__ import annotations

import json
import os
import struct

import numpy as np

D_MODEL = 256
N_LAYERS = 4
VOCAB = 512
FFN = 512
STEPS = {0: 1.0, 1000: 0.75, 2000: 0.25, 3000: 2.4}

_DTYPES = {np.dtype("float32"): "F32", np.dtype("float16"): "F16", np.dtype("float64"): "F64"}


def write_safetensors(path: str, tensors: dict[str, np.ndarray],
                      metadata: dict[str, str] | None = None) -> None:
    """Write ``tensors`` (float16/32/64 numpy arrays) as a safetensors file."""
    header: dict[str, object] = {"__metadata__": metadata or {"format": "pt"}}
    offset = 0
    blobs = []
    for name, arr in tensors.items():
        arr = np.ascontiguousarray(arr)
        raw = arr.astype(arr.dtype.newbyteorder("<")).tobytes()
        header[name] = {"dtype": _DTYPES[arr.dtype], "shape": list(arr.shape),
                        "data_offsets": [offset, offset + len(raw)]}
        offset += len(raw)
        blobs.append(raw)
    hdr = json.dumps(header, separators=(",", ":")).encode()
    hdr += b" " * (-len(hdr) % 8)
    with open(path, "wb") as fh:
        fh.write(struct.pack("<Q", len(hdr)))
        fh.write(hdr)
        for raw in blobs:
            fh.write(raw)


def _gain(rng: np.random.Generator, n: int, ratio: float, spread: float) -> np.ndarray:
    """A gain of length ``n`` whose RMS is exactly ``ratio`` (spread > 0 adds channel noise)."""
    if spread == 0:
        return np.full(n, ratio, dtype=np.float32)
    g = 1.0 + spread * rng.standard_normal(n)
    g *= ratio / np.sqrt(np.mean(g * g))
    return g.astype(np.float32)


def llama_tensors(rng: np.random.Generator, final_ratio: float, layer_ratio: float,
                  spread: float, n_layers: int = N_LAYERS) -> dict[str, np.ndarray]:
    d = D_MODEL
    t: dict[str, np.ndarray] = {
        "model.embed_tokens.weight": (0.02 * rng.standard_normal((VOCAB, d))).astype(np.float32)
    }
    for i in range(n_layers):
        p = f"model.layers.{i}."
        t[p + "input_layernorm.weight"] = _gain(rng, d, layer_ratio, spread)
        t[p + "post_attention_layernorm.weight"] = _gain(rng, d, layer_ratio, spread)
        for proj in ("q_proj", "k_proj", "v_proj", "o_proj"):
            t[p + f"self_attn.{proj}.weight"] = (0.02 * rng.standard_normal((d, d))).astype(
                np.float32)
        t[p + "mlp.gate_proj.weight"] = (0.02 * rng.standard_normal((FFN, d))).astype(np.float32)
        t[p + "mlp.up_proj.weight"] = (0.02 * rng.standard_normal((FFN, d))).astype(np.float32)
        t[p + "mlp.down_proj.weight"] = (0.02 * rng.standard_normal((d, FFN))).astype(np.float32)
    t["model.norm.weight"] = _gain(rng, d, final_ratio, spread)
    t["lm_head.weight"] = (0.02 * rng.standard_normal((VOCAB, d))).astype(np.float32)
    return t


def llama_config(**extra: object) -> dict[str, object]:
    cfg: dict[str, object] = {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": D_MODEL,
        "intermediate_size": FFN, "num_hidden_layers": N_LAYERS, "num_attention_heads": 4,
        "num_key_value_heads": 4, "vocab_size": VOCAB, "rms_norm_eps": 1e-5,
        "max_position_embeddings": 256, "tie_word_embeddings": False,
    }
    cfg.update(extra)
    return cfg


def _save(folder: str, tensors: dict[str, np.ndarray], cfg: dict[str, object]) -> None:
    os.makedirs(folder, exist_ok=True)
    write_safetensors(os.path.join(folder, "model.safetensors"), tensors)
    with open(os.path.join(folder, "config.json"), "w", encoding="utf-8") as fh:
        json.dump(cfg, fh, indent=2)


def write_demo_run(root: str, seed: int = 0) -> dict[str, str]:
    """Write the demo checkpoints under ``root``; returns ``{label: folder}``."""
    rng = np.random.default_rng(seed)
    out: dict[str, str] = {}
    run = os.path.join(root, "run")
    for step, ratio in STEPS.items():
        spread = 0.0 if step == 0 else 0.15
        layer_ratio = 1.0 if step == 0 else 0.85
        folder = os.path.join(run, f"checkpoint-{step}")
        _save(folder, llama_tensors(rng, ratio, layer_ratio, spread), llama_config())
        out[f"step {step}"] = folder
    mtp = llama_tensors(rng, 0.8, 0.85, 0.15)
    p = f"model.layers.{N_LAYERS}."
    mtp[p + "enorm.weight"] = _gain(rng, D_MODEL, 0.9, 0.1)
    mtp[p + "hnorm.weight"] = _gain(rng, D_MODEL, 0.35, 0.1)
    mtp[p + "eh_proj.weight"] = (0.02 * rng.standard_normal((D_MODEL, 2 * D_MODEL))).astype(
        np.float32)
    mtp[p + "input_layernorm.weight"] = _gain(rng, D_MODEL, 0.9, 0.1)
    mtp[p + "post_attention_layernorm.weight"] = _gain(rng, D_MODEL, 0.9, 0.1)
    mtp[p + "shared_head.norm.weight"] = _gain(rng, D_MODEL, 0.7, 0.1)
    folder = os.path.join(root, "mtp-model")
    _save(folder, mtp, llama_config(num_nextn_predict_layers=1))
    out["mtp"] = folder
    return out
