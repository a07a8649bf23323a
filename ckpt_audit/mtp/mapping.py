"""Where the tensors of the trunk and of each MTP depth live, per layout, as name plans.

A *plan* maps the name a torch module expects (HF decoder-layer names, and the canonical names
of :class:`~ckpt_audit.mtp.modules.MtpDepth`: ``enorm``, ``hnorm``, ``eh_proj``, ``final_norm``,
``block.*``) to ``(checkpoint tensor name, transform)``. Only the tensors a plan names are ever
read. The layouts come from :data:`ckpt_audit.core.layouts.MTP_LAYOUTS` (the audit's table);
this module adds what running a depth needs: where the block sits and its parameter names.

Megatron-core trunks are ``embedding.word_embeddings``, ``decoder.layers.{i}``,
``decoder.final_layernorm``, ``output_layer``. Fused ``linear_qkv`` rows are grouped per query
group: [q of the group's heads; k; v]; ``linear_fc1`` is [gate; up]. Layouts:
:mod:`ckpt_audit.mtp.layouts`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from ckpt_audit.mtp.layouts import LayoutSpec
from ckpt_audit.records import frozen

Transform = Callable[[np.ndarray], np.ndarray] | None
#: target name -> (checkpoint name, transform) or (tuple of names, function of their arrays)
Plan = dict[str, tuple[Any, Any]]


# -- Megatron-core <-> HF decoder layer --------------------------------------------------------
@frozen
class Dims:
    """Attention shapes needed to split Megatron's fused QKV."""

    hidden: int
    heads: int
    kv_heads: int
    head_dim: int


def _qkv_part(d: Dims, part: str) -> Callable[[np.ndarray], np.ndarray]:
    per = d.heads // d.kv_heads

    def split(w: np.ndarray) -> np.ndarray:
        g = w.reshape(d.kv_heads, (per + 2) * d.head_dim, -1)
        q, k, v = np.split(g, [per * d.head_dim, (per + 1) * d.head_dim], axis=1)
        out = {"q": q, "k": k, "v": v}[part]
        return out.reshape(-1, w.shape[-1])

    return split


def _half(first: bool) -> Callable[[np.ndarray], np.ndarray]:
    def split(w: np.ndarray) -> np.ndarray:
        n = w.shape[0] // 2
        return w[:n] if first else w[n:]

    return split


def megatron_layer_plan(src: str, dst: str, d: Dims, have: set[str]) -> Plan:
    """HF Llama decoder-layer names under ``dst`` from a Megatron-core layer under ``src``.

    Transformer Engine checkpoints fuse the pre-norms into ``linear_qkv.layer_norm_weight`` and
    ``linear_fc1.layer_norm_weight``; local-spec ones name them ``input_layernorm`` and
    ``pre_mlp_layernorm``. Both are accepted.
    """
    qkv, fc1 = src + "self_attention.linear_qkv.weight", src + "mlp.linear_fc1.weight"
    ln1 = src + "self_attention.linear_qkv.layer_norm_weight"
    ln2 = src + "mlp.linear_fc1.layer_norm_weight"
    plan: Plan = {
        dst + "input_layernorm.weight": (ln1 if ln1 in have else src + "input_layernorm.weight",
                                         None),
        dst + "post_attention_layernorm.weight": (
            ln2 if ln2 in have else src + "pre_mlp_layernorm.weight", None),
        dst + "self_attn.q_proj.weight": (qkv, _qkv_part(d, "q")),
        dst + "self_attn.k_proj.weight": (qkv, _qkv_part(d, "k")),
        dst + "self_attn.v_proj.weight": (qkv, _qkv_part(d, "v")),
        dst + "self_attn.o_proj.weight": (src + "self_attention.linear_proj.weight", None),
        dst + "mlp.gate_proj.weight": (fc1, _half(True)),
        dst + "mlp.up_proj.weight": (fc1, _half(False)),
        dst + "mlp.down_proj.weight": (src + "mlp.linear_fc2.weight", None),
    }
    return plan


def megatron_trunk_plan(n_layers: int, d: Dims, have: set[str], tied: bool) -> Plan:
    """HF Llama names of the whole trunk from Megatron-core GPT names."""
    plan: Plan = {"model.embed_tokens.weight": ("embedding.word_embeddings.weight", None),
                  "model.norm.weight": ("decoder.final_layernorm.weight", None)}
    if not tied:
        plan["lm_head.weight"] = ("output_layer.weight", None)
    for i in range(n_layers):
        plan.update(megatron_layer_plan(f"decoder.layers.{i}.", f"model.layers.{i}.", d, have))
    return plan


def is_megatron_trunk(names: Iterable[str]) -> bool:
    """Megatron-core GPT naming (``decoder.layers.*``) rather than HF (``model.layers.*``)."""
    return any(n.startswith("decoder.layers.") for n in names)


def depth_plan(spec: LayoutSpec, k: int, n_layers: int, module_names: Iterable[str],
               have: set[str], dims: Dims | None) -> Plan:
    """Checkpoint names for every parameter of depth ``k``'s :class:`MtpDepth` module."""
    p = spec.prefix.format(k=k, layer=n_layers + k)
    plan: Plan = {}
    block_names = []
    for name in module_names:
        part, _, rest = name.partition(".")
        if part == "block":
            block_names.append(rest)
        elif part in spec.parts:
            plan[name] = (f"{p}{spec.parts[part]}.{rest}", None)
    if spec.megatron_block:
        inner = p + spec.block_prefix
        if not any(n.startswith(inner) for n in have):
            inner = p + "transformer_layer."
        assert dims is not None
        sub = megatron_layer_plan(inner, "block.", dims, have)
        plan.update({k2: v for k2, v in sub.items() if k2[len("block."):] in block_names})
        missing = [b for b in block_names if "block." + b not in sub]
        for b in missing:  # anything outside the Llama mapping: expect the same name
            plan["block." + b] = (inner + b, None)
    else:
        bp = p + spec.block_prefix.format(k=k)
        for b in block_names:
            plan["block." + b] = (bp + b, None)
    return plan


def fuse_experts(plan: Plan, have: set[str]) -> Plan:
    """Per-expert checkpoint tensors for transformers' fused expert parameters.

    transformers 5 holds MoE experts as ``mlp.experts.gate_up_proj`` [E, 2I, d] (each expert's
    gate rows then up rows) and ``mlp.experts.down_proj`` [E, d, I]; released checkpoints
    (DeepSeek-V3, GLM-4.5, Qwen MoE) store ``mlp.experts.{e}.{gate,up,down}_proj.weight``.
    Targets whose fused name is absent from the checkpoint are rewired to the per-expert names.
    """
    out: Plan = {}
    for target, (src, fn) in plan.items():
        if isinstance(src, str) and src not in have and src.endswith(
                ("mlp.experts.gate_up_proj", "mlp.experts.down_proj")):
            base = src.rsplit(".", 1)[0]
            n = 0
            while f"{base}.{n}.down_proj.weight" in have:
                n += 1
            if n:
                if src.endswith("gate_up_proj"):
                    names = tuple(f"{base}.{e}.{w}_proj.weight" for w in ("gate", "up")
                                  for e in range(n))
                    out[target] = (names, lambda arrs, n=n: np.stack(
                        [np.concatenate([arrs[e], arrs[n + e]]) for e in range(n)]))
                else:
                    names = tuple(f"{base}.{e}.down_proj.weight" for e in range(n))
                    out[target] = (names, lambda arrs: np.stack(arrs))
                continue
        out[target] = (src, fn)
    return out
