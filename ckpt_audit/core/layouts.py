"""Explicit tables of checkpoint key patterns: final norms, roles, MTP layouts, config keys.

Everything the analysis core knows about how real checkpoints name things lives here, as data,
so that supporting a new family means adding a row, not scattering string tests. Sources for
each row: docs/METRICS.md ("Names of norms in real checkpoints", "Roles") and docs/MTP.md
("What it loads": the MTP layouts).
"""

from __future__ import annotations

import re
from typing import Any

from ckpt_audit.records import frozen

# -- what is a gain ---------------------------------------------------------------------------
#: The module part of a name (the component before the parameter) that marks a normalization.
NORM_MODULE = re.compile(r"norm|^ln(?:_|\d|$)|_ln(?:_|\d|$)|^rms_", re.IGNORECASE)
#: Parameter names that hold a gain (BERT's old ``gamma``, Flax ``scale``).
GAIN_PARAMS = frozenset({"weight", "gamma", "scale", "g"})
#: Parameter names that hold a LayerNorm bias: not a gain, reported apart.
BIAS_PARAMS = frozenset({"bias", "beta"})
#: Whole parameter names that are gains on their own (Transformer Engine fused, llama2.c).
FUSED_GAIN = re.compile(r"(?:^|_)(?:layer_norm_weight|rms_(?:att|ffn|final)_weight)$")
FUSED_BIAS = re.compile(r"(?:^|_)layer_norm_bias$")

#: Quantized gains, by scheme: ``(scheme, suffix of the stored integers or FP8 values, suffixes
#: of the scale tensor)``. The gain is ``values × scale`` (broadcast): int8/uint8 with a float
#: scale (fracast's W8 ``X.qweight`` + ``X.scale``), FP8 with ``weight_scale_inv`` (DeepSeek) or
#: ``weight_scale`` (compressed-tensors). Sources: fracast ``_core/safetensors_io.py``,
#: DOMAIN.md section 6 (FP8 releases).
QUANT_SCHEMES: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("int8-scale", ".qweight", (".scale",)),
    ("fp8-scale", "", ("_scale_inv", "_scale")),
)
#: Integer dtypes a known scheme dequantizes.
QUANT_INT_DTYPES = frozenset({"I8", "U8"})
#: GGML block-quantized types (``Q8_0``, ``Q4_K``, ``IQ4_NL``, ``TQ1_0``...): the GGUF reader
#: dequantizes them with the ``gguf`` package, so such a 1-D gain is audited as read.
GGML_QUANT_DTYPE = re.compile(r"^(?:I?Q|TQ)\d")

# -- roles ------------------------------------------------------------------------------------
#: Names of the main model's final norm, most specific first. Exactly one gain gets role
#: ``final``: the first that matches in this order.
FINAL_PATTERNS: tuple[re.Pattern[str], ...] = tuple(
    re.compile(p)
    for p in (
        # Llama, Gemma, torchtitan, multimodal wrappers
        r"(?:model\.)?(?:language_model\.)?(?:model\.)?norm\.(?:weight|scale)",
        r"(?:transformer\.)?ln_f\.weight",  # GPT-2, Falcon, BLOOM, nanoGPT
        r"gpt_neox\.final_layer_norm\.weight",  # GPT-NeoX / Pythia
        r"(?:model\.)?final_layernorm\.weight",  # Phi-1/2
        r"(?:language_model\.)?(?:decoder|encoder)\.final_layernorm\.weight",  # Megatron
        r"(?:model\.)?decoder\.final_layer_norm\.weight",  # OPT, T5 decoder
        r"output_norm\.weight",  # GGUF
        r"(?:model\.)?rms_final_weight",  # llama2.c
        r"backbone\.norm_f\.weight",  # Mamba
        r"(?:model\.)?norm_f\.weight",
        r"(?:rwkv\.)?ln_out\.weight",  # RWKV
        # a list of output norms (fracast's gather head): the highest index is the last

        r"(?:model\.)?head\.decoder_norms\.\d+\.weight",
    )
)

#: Prefixes a trainer's wrapper adds in front of the model's own names (Lightning ``model.``,
#: DDP ``module.``, ``torch.compile`` ``_orig_mod.``): final patterns also match without them.
WRAPPER_PREFIXES = ("model.", "module.", "_orig_mod.")

#: (role, pattern) tried in order on every gain that is not final and not MTP.
ROLE_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (role, re.compile(p))
    for role, p in (
        ("latent", r"(?:q_a|kv_a)_(?:layer)?norm\.|attn_(?:q_a|kv_a)_norm\."),  # DeepSeek MLA
        ("qk", r"(?:^|\.)(?:q|k)_(?:norm|layernorm|ln)\.|attn_[qk]_norm\.|(?:q|k)_layer_norm\."),
        (
            "embedding",
            r"embeddings?\.(?:LayerNorm|layer_norm|norm)\.|emb_ln\.|embed(?:ding)?_?layer_?norm"
            r"|word_embeddings_layernorm|token_embd_norm|embedding_norm",
        ),
    )
)

#: A layer index in a name: ``layers.3.``, ``h.3.``, ``blk.3.``, ``layer.3.``, ``blocks.3.``.
LAYER_INDEX = re.compile(r"(?:^|\.)(?:layers|h|blk|layer|blocks|block|mtp_layers)\.(\d+)\.")

#: Prefixes that put a tensor inside an MTP module regardless of config.
MTP_PREFIXES = ("mtp.", "model.mtp.", "mtp_layers.", "model.mtp_layers.")
MTP_INFIXES = (".nextn.",)


def is_mtp_name(name: str) -> bool:
    """True for names inside an MTP module by their prefix alone (not DeepSeek's layer N+k)."""
    return name.startswith(MTP_PREFIXES) or any(s in name for s in MTP_INFIXES)


# -- MTP layouts ------------------------------------------------------------------------------
@frozen
class MtpLayout:
    """Where an MTP depth ``k`` lives and which tensors it must have.

    ``prefix`` is formatted with ``k`` (depth, 0-based) and ``n`` (num_hidden_layers);
    ``required`` are suffixes under that prefix; ``hidden_first`` is the concatenation order
    of ``[hnorm(h); enorm(emb)]`` (MiMo) versus ``[enorm(emb); hnorm(h)]`` (everyone else).
    """

    name: str
    prefix: str
    required: tuple[str, ...]
    hidden_first: bool
    model_types: tuple[str, ...] = ()


MTP_LAYOUTS: tuple[MtpLayout, ...] = (
    MtpLayout(
        "deepseek-hf",
        "model.layers.{layer}.",
        ("enorm.weight", "hnorm.weight", "eh_proj.weight", "shared_head.norm.weight"),
        hidden_first=False,
        model_types=("deepseek_v3", "deepseek_v32", "glm4_moe", "kimi_k2", "deepseek_mtp"),
    ),
    MtpLayout(
        "megatron",
        "mtp.layers.{k}.",
        ("enorm.weight", "hnorm.weight", "eh_proj.weight", "final_layernorm.weight"),
        hidden_first=False,
        model_types=("megatron",),
    ),
    MtpLayout(
        "qwen3-next",
        "mtp.",
        ("pre_fc_norm_embedding.weight", "pre_fc_norm_hidden.weight", "fc.weight", "norm.weight"),
        hidden_first=False,
        model_types=("qwen3_next", "qwen3_5", "qwen3_5_moe"),
    ),
    MtpLayout(
        "mimo",
        "model.mtp_layers.{k}.",
        ("token_layernorm.weight", "hidden_layernorm.weight", "input_proj.weight",
         "final_layernorm.weight"),
        hidden_first=True,
        model_types=("mimo",),
    ),
    MtpLayout(
        "gguf-nextn",
        "blk.{layer}.nextn.",
        ("enorm.weight", "hnorm.weight", "eh_proj.weight", "shared_head_norm.weight"),
        hidden_first=False,
    ),
)

#: Post-LN encoders: no final norm by design (the last block's LayerNorm ends the stack).
ENCODER_MODEL_TYPES = frozenset({"bert", "roberta", "xlm-roberta", "distilbert", "electra",
                                 "mpnet", "deberta", "deberta-v2", "albert", "camembert"})

#: Config keys that declare how many MTP depths a checkpoint has.
MTP_COUNT_KEYS = ("num_nextn_predict_layers", "mtp_num_layers", "num_mtp_layers",
                  "mtp_num_hidden_layers", "nextn_predict_layers", "n_mtp")

#: Config keys for d_model, in the order they are tried.
D_MODEL_KEYS = ("hidden_size", "n_embd", "d_model", "dim", "model_dim", "embedding_length",
                "n_embed", "emb_dim")
#: Nested configs (multimodal wrappers) that hold the language model's settings.
NESTED_CONFIGS = ("text_config", "llm_config", "language_config", "thinker_config",
                  "model")  # fracast's config.json: {"model": {"d_model": 64, ...}}
#: Config keys for the number of main decoder layers.
N_LAYERS_KEYS = ("num_hidden_layers", "num_layers", "n_layer", "n_layers", "block_count")


def text_config(cfg: dict[str, Any]) -> dict[str, Any]:
    """The language model's part of a (possibly multimodal) config."""
    for key in NESTED_CONFIGS:
        inner = cfg.get(key)
        if isinstance(inner, dict):
            merged = dict(cfg)
            merged.update(inner)
            return merged
    return cfg


def _first_int(cfg: dict[str, Any], keys: tuple[str, ...]) -> int | None:
    for key in keys:
        val = cfg.get(key)
        if isinstance(val, int) and not isinstance(val, bool) and val > 0:
            return val
    return None


def d_model_from_config(cfg: dict[str, Any]) -> tuple[int | None, str | None]:
    """``(d_model, key it came from)`` or ``(None, None)``."""
    tc = text_config(cfg)
    for key in D_MODEL_KEYS:
        val = _first_int(tc, (key,))
        if val is not None:
            return val, key
    return None, None


def num_layers_from_config(cfg: dict[str, Any]) -> int | None:
    """Number of main decoder layers, if the config says."""
    return _first_int(text_config(cfg), N_LAYERS_KEYS)


def mtp_count_from_config(cfg: dict[str, Any]) -> tuple[int, str | None]:
    """``(number of MTP depths declared, key)``; ``(0, None)`` when none is declared."""
    tc = text_config(cfg)
    for key in MTP_COUNT_KEYS:
        val = tc.get(key)
        if isinstance(val, int) and not isinstance(val, bool) and val > 0:
            return val, key
    return 0, None


def model_type(cfg: dict[str, Any]) -> str:
    """``model_type`` of the (text) config, lower-case, or ``""``."""
    tc = text_config(cfg)
    mt = tc.get("model_type") or cfg.get("model_type") or ""
    return str(mt).lower()
