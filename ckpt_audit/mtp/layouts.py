"""The MTP layouts accept can run, derived from the audit's table (no numpy, no torch: the CLI's
``--layout`` help reads them).

:data:`ckpt_audit.core.layouts.MTP_LAYOUTS` names each layout's prefix and four required
tensors; this adds what running a depth needs: where the block's own tensors sit under the depth
prefix and whether they use Megatron-core names, and the concatenation order as a name.
Layouts (docs/MTP.md, "What it loads"):

- ``deepseek-hf``: ``model.layers.{N+k}.{enorm,hnorm,eh_proj,shared_head.norm}`` + a decoder
  block in the trunk's own names (DeepSeek-V3, GLM-4.5, and our Llama fixture).
- ``megatron``: ``mtp.layers.{k}.{enorm,hnorm,eh_proj,final_layernorm}`` + the block under
  ``mtp_model_layer.`` (older: ``transformer_layer.``) in Megatron-core names.
- ``qwen3-next``: ``mtp.{fc,pre_fc_norm_embedding,pre_fc_norm_hidden,norm}`` + ``mtp.layers.{k}.*``.
- ``mimo``: ``model.mtp_layers.{k}.{token_layernorm,hidden_layernorm,input_proj,final_layernorm}``
  + the block's own names; the concatenation is hidden first.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from ckpt_audit.core.layouts import MTP_LAYOUTS, MtpLayout
from ckpt_audit.records import frozen

#: concatenation orders of an MTP depth's input: [enorm(emb); hnorm(h)] or [hnorm(h); enorm(emb)]
EMBEDDING_FIRST = "embedding-first"
HIDDEN_FIRST = "hidden-first"
ORDERS = (EMBEDDING_FIRST, HIDDEN_FIRST)


@frozen
class LayoutSpec:
    """How one layout names an MTP depth's parts (suffixes under the depth's prefix)."""

    name: str
    prefix: str  # formatted with k (depth, 0-based) and layer (N + k)
    parts: Mapping[str, str]  # canonical part -> checkpoint suffix
    block_prefix: str  # under the depth prefix; formatted with k
    default_order: str
    megatron_block: bool = False


#: What running a depth needs beyond the audit's table: where the block's own tensors sit under
#: the depth prefix (formatted with k) and whether they use Megatron-core names. Layouts of
#: :data:`MTP_LAYOUTS` absent here (GGUF's nextn) cannot be run by accept.
_BLOCKS: dict[str, tuple[str, bool]] = {
    "deepseek-hf": ("", False),
    "megatron": ("mtp_model_layer.", True),
    "qwen3-next": ("layers.{k}.", False),
    "mimo": ("", False),
}
#: canonical part names, in the order of :attr:`MtpLayout.required`
_PARTS = ("enorm", "hnorm", "eh_proj", "final_norm")


def _spec(layout: MtpLayout) -> LayoutSpec:
    block, megatron = _BLOCKS[layout.name]
    parts = {p: r.removesuffix(".weight") for p, r in zip(_PARTS, layout.required, strict=True)}
    return LayoutSpec(layout.name, layout.prefix, parts, block,
                      HIDDEN_FIRST if layout.hidden_first else EMBEDDING_FIRST, megatron)


#: The layouts accept can run, derived from the audit's table (one source of the names).
LAYOUTS: dict[str, LayoutSpec] = {lay.name: _spec(lay) for lay in MTP_LAYOUTS
                                  if lay.name in _BLOCKS}


def required_names(spec: LayoutSpec, k: int, n_layers: int) -> list[str]:
    """The four tensors that must exist for depth ``k`` (0-based) in this layout."""
    p = spec.prefix.format(k=k, layer=n_layers + k)
    return [f"{p}{suffix}.weight" for suffix in spec.parts.values()]


def count_depths(spec: LayoutSpec, names: Iterable[str], n_layers: int, limit: int = 64) -> int:
    """How many consecutive depths (from 0) have all their required tensors."""
    have = set(names)
    shared = "{k}" not in spec.prefix and "{layer}" not in spec.prefix
    k = 0
    while k < limit and all(n in have for n in required_names(spec, k, n_layers)):
        if shared:  # Qwen3-Next: one fc/norm set, depth k runs block mtp.layers.{k}
            inner = spec.prefix + spec.block_prefix.format(k=k)
            if not any(n.startswith(inner) for n in have):
                break
        k += 1
    return k


def looked_for(n_layers: int) -> list[str]:
    """The depth-0 names of every layout, for the 'no MTP tensors' error."""
    return [", ".join(required_names(s, 0, n_layers)) + f" ({s.name})" for s in LAYOUTS.values()]
