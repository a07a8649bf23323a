"""Checkpoints written the way real trainers write them, from the real stories260K's gains.

The gains are cut out of ``stories260K.bin`` here with plain numpy (llama2.c's v0 layout:
seven int32, then float32 arrays in export.py's order), never with ckpt-audit's readers; the
files are written with ``torch.save`` exactly as nanoGPT's ``train.py`` and Meta's original
Llama release save them.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Stories:
    """stories260K's hyper-parameters and gains (float32 arrays), cut out independently."""

    dim: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    vocab: int
    att: np.ndarray  # [n_layers, dim]
    ffn: np.ndarray  # [n_layers, dim]
    final: np.ndarray  # [dim]
    emb: np.ndarray  # [vocab, dim]


def stories(path: Path) -> Stories:
    raw = path.read_bytes()
    d, h, n_layers, heads, kv_heads, v, _seq = struct.unpack_from("<7i", raw)
    v = abs(v)
    kv = d * kv_heads // heads
    f = np.frombuffer(raw, "<f4", offset=28)
    sizes = [("emb", v * d), ("att", n_layers * d), ("wq", n_layers * d * d),
             ("wk", n_layers * kv * d), ("wv", n_layers * kv * d), ("wo", n_layers * d * d),
             ("ffn", n_layers * d), ("w1", n_layers * h * d), ("w2", n_layers * d * h),
             ("w3", n_layers * h * d), ("final", d)]
    out, pos = {}, 0
    for name, n in sizes:
        out[name] = f[pos : pos + n].copy()
        pos += n
    return Stories(d, n_layers, heads, kv_heads, v, out["att"].reshape(n_layers, d),
                   out["ffn"].reshape(n_layers, d), out["final"], out["emb"].reshape(v, d))


def rms(x: np.ndarray) -> float:
    """The truth for a direct gain: ‖γ‖₂/√n = RMS, in float64."""
    return float(np.sqrt(np.mean(np.asarray(x, dtype=np.float64) ** 2)))


def nanogpt_state(s: Stories, compiled: bool = True, final_scale: float = 1.0) -> dict[str, Any]:
    """nanoGPT's model.state_dict() names (``_orig_mod.`` when ``torch.compile`` was used)."""
    import torch

    p = "_orig_mod." if compiled else ""
    sd: dict[str, Any] = {f"{p}transformer.wte.weight": torch.from_numpy(s.emb),
                          f"{p}transformer.ln_f.weight":
                              torch.from_numpy(s.final * np.float32(final_scale))}
    for i in range(s.n_layers):
        sd[f"{p}transformer.h.{i}.ln_1.weight"] = torch.from_numpy(s.att[i].copy())
        sd[f"{p}transformer.h.{i}.attn.c_attn.weight"] = torch.zeros(3 * s.dim, s.dim)
        sd[f"{p}transformer.h.{i}.ln_2.weight"] = torch.from_numpy(s.ffn[i].copy())
        sd[f"{p}transformer.h.{i}.mlp.c_fc.weight"] = torch.zeros(4 * s.dim, s.dim)
    sd[f"{p}lm_head.weight"] = sd[f"{p}transformer.wte.weight"]
    return sd


def save_nanogpt(s: Stories, path: Path, final_scale: float = 1.0, **save_kw: Any) -> Path:
    """``ckpt.pt`` as nanoGPT's train.py writes it (0-d ``best_val_loss`` beside ``model``)."""
    import torch

    model_args = dict(n_layer=s.n_layers, n_head=s.n_heads, n_embd=s.dim, block_size=256,
                      bias=False, vocab_size=s.vocab, dropout=0.0)
    checkpoint = {
        "model": nanogpt_state(s, final_scale=final_scale),
        "optimizer": {"state": {0: {"exp_avg": torch.zeros(4)}}, "param_groups": []},
        "model_args": model_args,
        "iter_num": 5000,
        "best_val_loss": torch.tensor(1.3),
        "config": {"out_dir": "out", "eval_interval": 2000, "n_embd": 999, "compile": True},
    }
    torch.save(checkpoint, path, **save_kw)
    return path


def meta_state(s: Stories, rank: int = 0, ranks: int = 1) -> dict[str, Any]:
    """Meta's original Llama names; matrices split across model-parallel ranks, norms
    replicated on every rank (as in Meta's release)."""
    import torch

    d = s.dim
    sd: dict[str, Any] = {"tok_embeddings.weight": torch.from_numpy(
        np.array_split(s.emb, ranks, axis=1)[rank].copy()),
        "norm.weight": torch.from_numpy(s.final.copy()),
        "output.weight": torch.zeros(s.vocab // ranks, d)}
    for i in range(s.n_layers):
        sd[f"layers.{i}.attention_norm.weight"] = torch.from_numpy(s.att[i].copy())
        sd[f"layers.{i}.ffn_norm.weight"] = torch.from_numpy(s.ffn[i].copy())
        sd[f"layers.{i}.attention.wq.weight"] = torch.zeros(d // ranks, d)
        sd[f"layers.{i}.feed_forward.w1.weight"] = torch.zeros(4 * d // ranks, d)
    return sd


def save_meta(s: Stories, folder: Path, ranks: int = 1) -> Path:
    """``consolidated.NN.pth`` per model-parallel rank plus ``params.json``."""
    import torch

    folder.mkdir(parents=True, exist_ok=True)
    for r in range(ranks):
        torch.save(meta_state(s, r, ranks), folder / f"consolidated.{r:02d}.pth")
    (folder / "params.json").write_text(json.dumps({
        "dim": s.dim, "n_layers": s.n_layers, "n_heads": s.n_heads,
        "n_kv_heads": s.n_kv_heads, "vocab_size": s.vocab, "multiple_of": 32,
        "norm_eps": 1e-05}))
    return folder
