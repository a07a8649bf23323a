"""Tiny checkpoints written by transformers' own ``save_pretrained`` (real writers, no mocks)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch


def _small(**kw: Any) -> dict[str, Any]:
    base = dict(hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=2, vocab_size=128, max_position_embeddings=64)
    base.update(kw)
    return base


def build(family: str) -> torch.nn.Module:
    """A tiny randomly initialised model of ``family`` (gains at their init: all ones/zeros)."""
    import transformers as tf

    torch.manual_seed(0)
    if family == "llama":
        cfg = tf.LlamaConfig(**_small())
        return tf.LlamaForCausalLM(cfg)
    if family == "qwen3":
        cfg = tf.Qwen3Config(**_small(head_dim=16))
        return tf.Qwen3ForCausalLM(cfg)
    if family == "gemma":
        cfg = tf.GemmaConfig(**_small(head_dim=16))
        return tf.GemmaForCausalLM(cfg)
    if family == "gpt2":
        cfg = tf.GPT2Config(n_embd=64, n_layer=2, n_head=4, vocab_size=128, n_positions=64)
        return tf.GPT2LMHeadModel(cfg)
    if family == "neox":
        cfg = tf.GPTNeoXConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                               intermediate_size=96, vocab_size=128, max_position_embeddings=64)
        return tf.GPTNeoXForCausalLM(cfg)
    if family == "deepseek_v3":
        cfg = tf.DeepseekV3Config(
            hidden_size=64, intermediate_size=96, moe_intermediate_size=32, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=4, vocab_size=128, n_routed_experts=4,
            num_experts_per_tok=2, n_group=1, topk_group=1, first_k_dense_replace=1,
            q_lora_rank=32, kv_lora_rank=16, qk_rope_head_dim=8, qk_nope_head_dim=8,
            v_head_dim=16, max_position_embeddings=64)
        return tf.DeepseekV3ForCausalLM(cfg)
    raise ValueError(family)


def perturb_gains(model: torch.nn.Module, seed: int = 1, scale: float = 0.3) -> None:
    """Move every norm weight off its init so the figures are not trivial."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 1 and "norm" in name.lower() or ".ln_" in name or "ln_f" in name:
                p.add_(scale * torch.randn(p.shape, generator=g))


def save(model: torch.nn.Module, folder: Path, **kw: Any) -> Path:
    model.save_pretrained(folder, **kw)
    return folder
