"""Storage conventions of norm gains: direct (γ_eff = w), offset (γ_eff = 1 + w), none.

Detected from the config (model_type and Megatron's 1p flags), with a user override and a
reader hint (GGUF files are always direct: llama.cpp bakes the +1 in). Which families use which:
docs/METRICS.md, "Conventions".
"""

from __future__ import annotations

import re
from typing import Any

from ckpt_audit.core.layouts import model_type, text_config
from ckpt_audit.records import Convention

#: HF model types whose RMSNorm stores w with γ_eff = 1 + w (w initialised to zeros).
OFFSET_MODEL_TYPES = frozenset({
    "gemma", "gemma2", "gemma3", "gemma3_text", "paligemma", "recurrent_gemma", "t5gemma",
    "vaultgemma", "qwen3_next", "qwen3_5", "qwen3_5_text", "qwen3_5_moe", "qwen3_5_moe_text",
    "nemotron",
})
#: Model types whose norms have no gain at all (OLMo-1's non-parametric LayerNorm).
NONE_MODEL_TYPES = frozenset({"olmo"})
#: Config flags (Megatron args, NeMo) that switch LayerNorm to zero-centred gains.
OFFSET_FLAGS = ("apply_layernorm_1p", "layernorm_zero_centered_gamma", "zero_centered_gamma")
#: Gains that stay direct inside an offset model: (model types, name pattern).
DIRECT_EXCEPTIONS: tuple[tuple[frozenset[str], re.Pattern[str]], ...] = (
    (frozenset({"qwen3_next", "qwen3_5", "qwen3_5_text", "qwen3_5_moe", "qwen3_5_moe_text"}),
     re.compile(r"linear_attn\.norm\.")),
)


#: Names that exist only in offset-storing Gemma 2/3 checkpoints (OLMo-2 has
#: ``post_feedforward_layernorm`` but never ``pre_feedforward_layernorm``)...
OFFSET_ONLY_NAMES = re.compile(r"(?:^|\.)pre_feedforward_layernorm\.")
#: ... unless the checkpoint also has Gemma-3n's modules, whose RMSNorm is direct.
DIRECT_GEMMA_NAMES = re.compile(r"(?:^|\.)(?:altup|laurel|per_layer_)")


def convention_from_names(names: list[str]) -> tuple[Convention, str] | None:
    """``(offset, why)`` when the tensor names are Gemma 2/3's own and nothing else says how
    gains are stored; ``None`` when the names prove nothing."""
    hit = next((n for n in names if OFFSET_ONLY_NAMES.search(n)), None)
    if hit is None or any(DIRECT_GEMMA_NAMES.search(n) for n in names):
        return None
    return Convention.OFFSET, (f"inferred from the tensor names ({hit!r} exists only in "
                               "Gemma 2/3, which store 1+w)")


def detect_convention(cfg: dict[str, Any]) -> tuple[Convention, str]:
    """``(convention, why)`` from a config alone."""
    tc = text_config(cfg)
    mt = model_type(cfg)
    for flag in OFFSET_FLAGS:
        if tc.get(flag) is True or cfg.get(flag) is True:
            return Convention.OFFSET, f"config {flag}=true"
    if mt in OFFSET_MODEL_TYPES:
        return Convention.OFFSET, f"model_type {mt!r} stores 1+w"
    if mt in NONE_MODEL_TYPES:
        return Convention.NONE, f"model_type {mt!r} has non-parametric norms"
    return Convention.DIRECT, f"model_type {mt!r}" if mt else "default"


def resolve_convention(
    cfg: dict[str, Any], override: Convention | None, hint: Convention | None
) -> tuple[Convention, str]:
    """The checkpoint-wide convention: user override > reader hint > config."""
    if override is not None:
        return override, "--convention"
    if hint is not None:
        return hint, "fixed by the file format"
    return detect_convention(cfg)


def convention_for(name: str, default: Convention, cfg: dict[str, Any], forced: bool) -> Convention:
    """The convention of one gain: the default, except for known direct gains in offset models."""
    if forced or default is not Convention.OFFSET:
        return default
    mt = model_type(cfg)
    for types, pattern in DIRECT_EXCEPTIONS:
        if mt in types and pattern.search(name):
            return Convention.DIRECT
    return default
