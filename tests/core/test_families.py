"""One table test per family: the names its real code writes in, roles and the final norm out.

Names follow each family's public modelling code (transformers, nanoGPT, Meta's llama, Megatron,
llama.cpp's GGUF names, llama2.c); the tensors are 1-D F32 of length 8 (discovery reads names,
shapes and dtypes only)."""

from __future__ import annotations

import pytest

from ckpt_audit.core.discovery import discover
from ckpt_audit.records import TensorInfo

# family -> (final norm, {gain name: (role, layer)}, names that are not gains)
FAMILIES: dict[str, tuple[str, dict[str, tuple[str, int | None]], list[str]]] = {
    "hf-llama": ("model.norm.weight", {
        "model.layers.0.input_layernorm.weight": ("layer", 0),
        "model.layers.1.post_attention_layernorm.weight": ("layer", 1)},
        ["model.embed_tokens.weight", "lm_head.weight"]),
    "hf-mistral": ("model.norm.weight", {
        "model.layers.3.input_layernorm.weight": ("layer", 3)}, []),
    "hf-qwen3": ("model.norm.weight", {
        "model.layers.0.self_attn.q_norm.weight": ("qk", 0),
        "model.layers.0.self_attn.k_norm.weight": ("qk", 0),
        "model.layers.0.input_layernorm.weight": ("layer", 0)}, []),
    "hf-gemma3": ("model.language_model.norm.weight", {
        "model.language_model.layers.0.pre_feedforward_layernorm.weight": ("layer", 0),
        "model.language_model.layers.0.post_feedforward_layernorm.weight": ("layer", 0),
        "model.language_model.layers.0.self_attn.q_norm.weight": ("qk", 0)}, []),
    "nanogpt": ("transformer.ln_f.weight", {
        "transformer.h.0.ln_1.weight": ("layer", 0),
        "transformer.h.5.ln_2.weight": ("layer", 5)},
        ["transformer.h.0.ln_1.bias", "transformer.wte.weight"]),
    "nanogpt-compiled-lightning": ("model.transformer.ln_f.weight", {
        "model.transformer.h.0.ln_1.weight": ("layer", 0)}, []),
    "meta-consolidated": ("norm.weight", {
        "layers.0.attention_norm.weight": ("layer", 0),
        "layers.7.ffn_norm.weight": ("layer", 7)}, ["tok_embeddings.weight", "output.weight"]),
    "gpt2-hub": ("ln_f.weight", {"h.0.ln_1.weight": ("layer", 0),
                                 "h.11.ln_2.weight": ("layer", 11)}, ["wte.weight"]),
    "gpt-j": ("transformer.ln_f.weight", {"transformer.h.2.ln_1.weight": ("layer", 2)}, []),
    "gpt-neox": ("gpt_neox.final_layer_norm.weight", {
        "gpt_neox.layers.0.input_layernorm.weight": ("layer", 0),
        "gpt_neox.layers.0.post_attention_layernorm.weight": ("layer", 0)}, []),
    "falcon": ("transformer.ln_f.weight", {
        "transformer.h.0.ln_attn.weight": ("layer", 0),
        "transformer.h.0.ln_mlp.weight": ("layer", 0),
        "transformer.h.1.input_layernorm.weight": ("layer", 1)}, []),
    "bloom": ("transformer.ln_f.weight", {
        "transformer.word_embeddings_layernorm.weight": ("embedding", None),
        "transformer.h.0.input_layernorm.weight": ("layer", 0)}, []),
    "opt": ("model.decoder.final_layer_norm.weight", {
        "model.decoder.layers.0.self_attn_layer_norm.weight": ("layer", 0),
        "model.decoder.layers.0.final_layer_norm.weight": ("layer", 0)}, []),
    "t5": ("decoder.final_layer_norm.weight", {  # the decoder's final is the LM's
        "encoder.final_layer_norm.weight": ("other", None),
        "encoder.block.0.layer.0.layer_norm.weight": ("layer", 0),
        "decoder.block.1.layer.2.layer_norm.weight": ("layer", 1)}, []),
    "phi-2": ("model.final_layernorm.weight", {
        "model.layers.0.input_layernorm.weight": ("layer", 0),
        "model.layers.0.self_attn.q_layernorm.weight": ("qk", 0)}, []),
    "phi-3": ("model.norm.weight", {
        "model.layers.0.post_attention_layernorm.weight": ("layer", 0)}, []),
    "mamba": ("backbone.norm_f.weight", {"backbone.layers.0.norm.weight": ("layer", 0)},
              ["backbone.layers.0.mixer.A_log"]),
    "rwkv": ("rwkv.ln_out.weight", {
        "rwkv.blocks.0.pre_ln.weight": ("layer", 0),
        "rwkv.blocks.0.ln1.weight": ("layer", 0),
        "rwkv.blocks.3.ln2.weight": ("layer", 3)}, []),
    "olmo2": ("model.norm.weight", {
        "model.layers.0.post_attention_layernorm.weight": ("layer", 0),
        "model.layers.0.post_feedforward_layernorm.weight": ("layer", 0),
        "model.layers.0.self_attn.q_norm.weight": ("qk", 0)}, []),
    "megatron-core": ("decoder.final_layernorm.weight", {
        "decoder.layers.0.input_layernorm.weight": ("layer", 0),
        "decoder.layers.0.self_attention.linear_qkv.layer_norm_weight": ("layer", 0),
        "decoder.layers.1.mlp.linear_fc1.layer_norm_weight": ("layer", 1),
        "decoder.layers.1.self_attention.q_layernorm.weight": ("qk", 1)}, []),
    "megatron-legacy-lm": ("language_model.encoder.final_layernorm.weight", {
        "language_model.encoder.layers.0.input_layernorm.weight": ("layer", 0)}, []),
    "gguf": ("output_norm.weight", {
        "blk.0.attn_norm.weight": ("layer", 0), "blk.0.ffn_norm.weight": ("layer", 0),
        "blk.1.attn_q_norm.weight": ("qk", 1)}, ["token_embd.weight"]),
    # llama2.c's reader names rms_att/rms_ffn/rms_final as HF Llama does
    "llama2c": ("model.norm.weight", {
        "model.layers.0.input_layernorm.weight": ("layer", 0),
        "model.layers.4.post_attention_layernorm.weight": ("layer", 4)}, []),
    "llama2c-raw-names": ("rms_final_weight", {"rms_att_weight": ("other", None)}, []),
    "fracast": ("head.decoder_norms.0.weight", {
        "core.block.norm1.weight": ("other", None),
        "head.fc_blocks.1.norm.weight": ("other", None)}, []),
}


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_family_roles_and_final(family: str) -> None:
    final, gains, others = FAMILIES[family]
    names = [final, *gains, *others]
    tensors = {n: TensorInfo(n, (8,), "F32", "x") for n in names}
    d = discover(tensors, {})
    got = {c.name: (c.role.value, c.layer) for c in d.gains}
    assert got.pop(final) == ("final", None), family
    assert got == gains, family
