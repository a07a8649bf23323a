"""A DeepSeek-V3-shaped safetensors checkpoint as sparse files: real headers, real gains, holes.

``make_deepseek_v3_sparse(dir)`` writes what ``deepseek-ai/DeepSeek-V3`` looks like on disk
(61 decoder layers, the first 3 dense and the rest with 256 routed experts + 1 shared expert, MLA
attention with ``q_a_layernorm`` [1536] and ``kv_a_layernorm`` [512], FP8 E4M3 weights with F32
``weight_scale_inv`` blocks of 128×128, BF16 norms/embeddings, and the MTP module as
``model.layers.61.*``) spread over 162 shards with a ``model.safetensors.index.json`` and a
``config.json``. Each shard has a genuine safetensors header (8-byte length, JSON padded to 8 bytes,
data ordered the way the ``safetensors`` library orders it: by dtype, widest first, then by name)
and the full apparent size (~688 GB in all), but only the header and the norm gains are written:
everything else is a hole, so the folder costs a few MB of disk.

The gains are written as BF16 values drawn from a seeded generator (ones for the MTP ``enorm`` so
one gain is exactly at init), and returned so benchmarks and tests can compare every figure.
"""

from __future__ import annotations

import json
import math
import os
import struct
from dataclasses import dataclass, field

import numpy as np

HIDDEN = 7168
VOCAB = 129280
N_LAYERS = 61
N_MTP = 1
INTERMEDIATE = 18432
MOE_INTERMEDIATE = 2048
N_EXPERTS = 256
N_HEADS = 128
Q_LORA = 1536
KV_LORA = 512
QK_NOPE = 128
QK_ROPE = 64
V_HEAD = 128
FIRST_DENSE = 3
N_SHARDS = 162
BLOCK = 128

#: bytes per element and the ``safetensors`` library's dtype order (it writes larger dtypes first)
_ITEM = {"F32": 4, "BF16": 2, "F8_E4M3": 1}
_ORDER = {"F32": 0, "BF16": 1, "F8_E4M3": 2}

CONFIG = {
    "architectures": ["DeepseekV3ForCausalLM"],
    "model_type": "deepseek_v3",
    "hidden_size": HIDDEN,
    "intermediate_size": INTERMEDIATE,
    "moe_intermediate_size": MOE_INTERMEDIATE,
    "num_hidden_layers": N_LAYERS,
    "num_nextn_predict_layers": N_MTP,
    "num_attention_heads": N_HEADS,
    "num_key_value_heads": N_HEADS,
    "n_routed_experts": N_EXPERTS,
    "n_shared_experts": 1,
    "num_experts_per_tok": 8,
    "first_k_dense_replace": FIRST_DENSE,
    "q_lora_rank": Q_LORA,
    "kv_lora_rank": KV_LORA,
    "qk_nope_head_dim": QK_NOPE,
    "qk_rope_head_dim": QK_ROPE,
    "v_head_dim": V_HEAD,
    "vocab_size": VOCAB,
    "rms_norm_eps": 1e-6,
    "torch_dtype": "bfloat16",
    "quantization_config": {
        "activation_scheme": "dynamic",
        "fmt": "e4m3",
        "quant_method": "fp8",
        "weight_block_size": [BLOCK, BLOCK],
    },
}


@dataclass
class SparseCheckpoint:
    """What :func:`make_deepseek_v3_sparse` wrote: paths, sizes and the exact gain values."""

    root: str
    shards: list[str]
    #: gain name -> float32 values (exactly the BF16 values stored)
    gains: dict[str, np.ndarray]
    #: sum over shards of 8 + header length
    header_bytes: int
    #: bytes of all gains as stored (BF16)
    gain_bytes: int
    #: apparent size of all shards
    apparent_bytes: int
    #: bytes of config.json + model.safetensors.index.json
    small_file_bytes: int
    tensor_count: int = 0
    weight_map: dict[str, str] = field(default_factory=dict)


def _fp8(name: str, rows: int, cols: int) -> list[tuple[str, str, tuple[int, ...]]]:
    """An FP8 linear weight and its block scale, as DeepSeek-V3 stores them."""
    return [
        (f"{name}.weight", "F8_E4M3", (rows, cols)),
        (f"{name}.weight_scale_inv", "F32", (math.ceil(rows / BLOCK), math.ceil(cols / BLOCK))),
    ]


def _layer(i: int) -> list[tuple[str, str, tuple[int, ...]]]:
    p = f"model.layers.{i}"
    out: list[tuple[str, str, tuple[int, ...]]] = [
        (f"{p}.input_layernorm.weight", "BF16", (HIDDEN,)),
        (f"{p}.post_attention_layernorm.weight", "BF16", (HIDDEN,)),
        (f"{p}.self_attn.q_a_layernorm.weight", "BF16", (Q_LORA,)),
        (f"{p}.self_attn.kv_a_layernorm.weight", "BF16", (KV_LORA,)),
    ]
    out += _fp8(f"{p}.self_attn.q_a_proj", Q_LORA, HIDDEN)
    out += _fp8(f"{p}.self_attn.q_b_proj", N_HEADS * (QK_NOPE + QK_ROPE), Q_LORA)
    out += _fp8(f"{p}.self_attn.kv_a_proj_with_mqa", KV_LORA + QK_ROPE, HIDDEN)
    out += _fp8(f"{p}.self_attn.kv_b_proj", N_HEADS * (QK_NOPE + V_HEAD), KV_LORA)
    out += _fp8(f"{p}.self_attn.o_proj", HIDDEN, N_HEADS * V_HEAD)
    if i < FIRST_DENSE:
        out += _fp8(f"{p}.mlp.gate_proj", INTERMEDIATE, HIDDEN)
        out += _fp8(f"{p}.mlp.up_proj", INTERMEDIATE, HIDDEN)
        out += _fp8(f"{p}.mlp.down_proj", HIDDEN, INTERMEDIATE)
        return out
    out.append((f"{p}.mlp.gate.weight", "BF16", (N_EXPERTS, HIDDEN)))
    out.append((f"{p}.mlp.gate.e_score_correction_bias", "F32", (N_EXPERTS,)))
    for e in [*range(N_EXPERTS), "shared"]:
        q = f"{p}.mlp.shared_experts" if e == "shared" else f"{p}.mlp.experts.{e}"
        out += _fp8(f"{q}.gate_proj", MOE_INTERMEDIATE, HIDDEN)
        out += _fp8(f"{q}.up_proj", MOE_INTERMEDIATE, HIDDEN)
        out += _fp8(f"{q}.down_proj", HIDDEN, MOE_INTERMEDIATE)
    return out


def tensor_list() -> list[tuple[str, str, tuple[int, ...]]]:
    """Every DeepSeek-V3 tensor (MTP layer 61 included) as (name, dtype, shape), in model order."""
    out: list[tuple[str, str, tuple[int, ...]]] = [
        ("model.embed_tokens.weight", "BF16", (VOCAB, HIDDEN))
    ]
    for i in range(N_LAYERS):
        out += _layer(i)
    out.append(("model.norm.weight", "BF16", (HIDDEN,)))
    out.append(("lm_head.weight", "BF16", (VOCAB, HIDDEN)))
    for k in range(N_MTP):
        i = N_LAYERS + k
        p = f"model.layers.{i}"
        out += [
            (f"{p}.embed_tokens.weight", "BF16", (VOCAB, HIDDEN)),
            (f"{p}.enorm.weight", "BF16", (HIDDEN,)),
            (f"{p}.hnorm.weight", "BF16", (HIDDEN,)),
            (f"{p}.eh_proj.weight", "BF16", (HIDDEN, 2 * HIDDEN)),
        ]
        out += _layer(i)
        out += [
            (f"{p}.shared_head.norm.weight", "BF16", (HIDDEN,)),
            (f"{p}.shared_head.head.weight", "BF16", (VOCAB, HIDDEN)),
        ]
    return out


def is_gain(name: str) -> bool:
    """True for the norm gains (the only tensors whose bytes are written)."""
    return name.endswith(("norm.weight", "layernorm.weight"))


def _gain_values(name: str, n: int, rng: np.random.Generator) -> np.ndarray:
    """Plausible trained gains (BF16-rounded float32): per-role mean, small spread."""
    if ".enorm." in name:
        return np.ones(n, dtype=np.float32)
    mean = 0.9 if name == "model.norm.weight" else (0.35 if "_a_layernorm" in name else 0.6)
    vals = rng.normal(mean, 0.15, n).astype(np.float32)
    bits = (vals.view(np.uint32) + 0x8000) >> 16  # round to nearest BF16 (no NaNs here)
    return (bits.astype(np.uint32) << 16).view(np.float32)


def _split(tensors: list[tuple[str, str, tuple[int, ...]]], n_shards: int) -> list[list[int]]:
    """Consecutive groups of tensors of roughly equal byte size, exactly ``n_shards`` of them."""
    sizes = [_ITEM[d] * math.prod(s) for _, d, s in tensors]
    total = sum(sizes)
    groups: list[list[int]] = [[] for _ in range(n_shards)]
    acc = 0
    for idx, size in enumerate(sizes):
        g = min(n_shards - 1, int(acc * n_shards // total))
        # never leave a later shard empty: the last tensors go one per remaining shard
        g = max(g, n_shards - (len(sizes) - idx))
        groups[g].append(idx)
        acc += size
    return groups


def _write_shard(path: str, entries: list[tuple[str, str, tuple[int, ...]]],
                 values: dict[str, np.ndarray]) -> tuple[int, int]:
    """Write one sparse shard; returns (8 + header length, file size)."""
    ordered = sorted(entries, key=lambda t: (_ORDER[t[1]], t[0]))
    header: dict[str, object] = {"__metadata__": {"format": "pt"}}
    offset = 0
    spans: dict[str, int] = {}
    for name, dtype, shape in ordered:
        n = _ITEM[dtype] * math.prod(shape)
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + n]}
        spans[name] = offset
        offset += n
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    start = 8 + len(raw)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        for name, _, _ in ordered:
            if name in values:
                bf16 = (values[name].view(np.uint32) >> 16).astype("<u2")
                f.seek(start + spans[name])
                f.write(bf16.tobytes())
        f.truncate(start + offset)
    return start, start + offset


def make_deepseek_v3_sparse(root: str, n_shards: int = N_SHARDS, seed: int = 0) -> SparseCheckpoint:
    """Write the sparse DeepSeek-V3-shaped checkpoint into ``root`` (created if needed)."""
    os.makedirs(root, exist_ok=True)
    tensors = tensor_list()
    rng = np.random.default_rng(seed)
    gains = {name: _gain_values(name, shape[0], rng)
             for name, _, shape in tensors if is_gain(name)}
    shards: list[str] = []
    weight_map: dict[str, str] = {}
    header_bytes = apparent = 0
    for k, group in enumerate(_split(tensors, n_shards)):
        fname = f"model-{k + 1:05d}-of-{n_shards:06d}.safetensors"
        entries = [tensors[i] for i in group]
        h, size = _write_shard(os.path.join(root, fname), entries, gains)
        header_bytes += h
        apparent += size
        shards.append(fname)
        for name, _, _ in entries:
            weight_map[name] = fname
    index = {"metadata": {"total_size": apparent - header_bytes}, "weight_map": weight_map}
    small = 0
    for fname, obj in (("model.safetensors.index.json", index), ("config.json", CONFIG)):
        data = json.dumps(obj, indent=2).encode()
        with open(os.path.join(root, fname), "wb") as f:
            f.write(data)
        small += len(data)
    return SparseCheckpoint(
        root=root, shards=shards, gains=gains, header_bytes=header_bytes,
        gain_bytes=sum(2 * v.size for v in gains.values()), apparent_bytes=apparent,
        small_file_bytes=small, tensor_count=len(tensors), weight_map=weight_map,
    )


if __name__ == "__main__":  # pragma: no cover - manual use
    import sys
    import time

    t0 = time.perf_counter()
    ck = make_deepseek_v3_sparse(sys.argv[1] if len(sys.argv) > 1 else "/tmp/dsv3-sparse")
    print(
        f"{len(ck.shards)} shards, {ck.tensor_count} tensors, {len(ck.gains)} gains, "
        f"apparent {ck.apparent_bytes / 1e9:.1f} GB, headers {ck.header_bytes / 1e6:.2f} MB, "
        f"gains {ck.gain_bytes / 1e6:.2f} MB, written in {time.perf_counter() - t0:.1f} s"
    )
