"""Build the trunk with transformers and the MTP depths with ckpt-audit, from a checkpoint.

The trunk is ``AutoModelForCausalLM.from_config`` on the checkpoint's config.json (or a Llama
config derived from Megatron-core args); each MTP depth is an :class:`MtpDepth` whose block is
one more decoder layer of the trunk's own class (layer index N+k, so DeepSeek-V3's MoE layers and
Qwen3-Next's full-attention layer come out right) and whose norms use the trunk's norm class (so
offset-convention norms stay offset). Tensors are read through
:func:`ckpt_audit.readers.open_checkpoint`, only those a plan names (never an optimizer), and
copied into the modules one group at a time with strict name and shape checks.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from ckpt_audit.core.conventions import detect_convention
from ckpt_audit.core.layouts import mtp_count_from_config, num_layers_from_config, text_config
from ckpt_audit.errors import CkptAuditError
from ckpt_audit.mtp import layouts, mapping, quant
from ckpt_audit.mtp.layouts import ORDERS, LayoutSpec
from ckpt_audit.mtp.modules import MtpDepth, Trunk
from ckpt_audit.mtp.quant import Quantization, WeightSource
from ckpt_audit.readers import open_checkpoint
from ckpt_audit.readers.base import CheckpointReader
from ckpt_audit.records import Convention

#: model_type values transformers does not know, and the class family they are built as.
MODEL_TYPE_ALIASES = {"mimo": "qwen2"}
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
_READ_GROUP = 64


@dataclass
class Loaded:
    """A ready-to-run trunk + MTP chain and what was learnt while loading it."""

    model: nn.Module
    trunk: Trunk
    depths: list[MtpDepth]
    layout: str
    order: str
    config: dict[str, Any]
    n_layers: int
    vocab_size: int
    device: torch.device
    dtype: torch.dtype
    display: str
    offset_norm: bool
    notes: list[str] = field(default_factory=list)
    #: stored dtypes of the weights read, most elements first (``float8_e4m3fn+float32``)
    stored_dtype: str = ""
    quantization: Quantization | None = None

    @property
    def final_gain_ratio(self) -> float:
        """RMS of the trunk's effective final gain (ratio ‖γ‖₂/√n, docs/METRICS.md)."""
        w = self.trunk.final_norm.weight.detach().double().cpu()
        g = w + 1.0 if self.offset_norm else w
        return float(g.norm() / math.sqrt(g.numel()))


def resolve_device(device: str) -> torch.device:
    """``auto`` -> cuda when available else cpu; ``cuda`` absent is a clear error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda"):
        from ckpt_audit.core.stats_torch import require_cuda

        require_cuda()
        return torch.device(device)
    if device == "cpu":
        return torch.device("cpu")
    raise CkptAuditError(f"--device must be auto, cpu or cuda, not {device!r}")


def resolve_dtype(dtype: str, cfg: dict[str, Any], device: torch.device) -> torch.dtype:
    """``auto``: the config's dtype on GPU, float32 on CPU (bf16 matmuls are slow there)."""
    if dtype == "auto":
        if device.type == "cpu":
            return torch.float32
        name = str(cfg.get("torch_dtype") or cfg.get("dtype") or "bfloat16")
        return DTYPES.get(name, torch.bfloat16)
    if dtype not in DTYPES:
        raise CkptAuditError(f"--dtype must be auto or one of {', '.join(DTYPES)}, not {dtype!r}")
    return DTYPES[dtype]


def megatron_config(args: dict[str, Any], vocab: int) -> dict[str, Any]:
    """A Llama config.json equivalent of Megatron-core GPT args (SwiGLU, RMSNorm, RoPE)."""
    heads = int(args["num_attention_heads"])
    return {
        "model_type": "llama",
        "hidden_size": int(args["hidden_size"]),
        "intermediate_size": int(args.get("ffn_hidden_size") or 4 * args["hidden_size"]),
        "num_hidden_layers": int(args["num_layers"]),
        "num_attention_heads": heads,
        "num_key_value_heads": int(args.get("num_query_groups") or heads),
        "vocab_size": vocab,
        "max_position_embeddings": int(args.get("max_position_embeddings") or 4096),
        "rms_norm_eps": float(args.get("norm_epsilon", 1e-5)),
        "rope_parameters": {"rope_type": "default",
                            "rope_theta": float(args.get("rotary_base", 10000))},
        "tie_word_embeddings": not args.get("untie_embeddings_and_output_weights", False),
        "mtp_num_layers": args.get("mtp_num_layers"),
        "mtp_loss_scaling_factor": args.get("mtp_loss_scaling_factor"),
    }


def hf_config(cfg: dict[str, Any], display: str) -> Any:
    """A transformers config object; an unknown architecture is a clear error."""
    from transformers import CONFIG_MAPPING

    tc = text_config(cfg)
    mtype = str(tc.get("model_type") or "")
    built = MODEL_TYPE_ALIASES.get(mtype, mtype)
    if built not in CONFIG_MAPPING:
        raise CkptAuditError(
            f"transformers cannot build model_type {mtype!r} (not in this transformers "
            "version's CONFIG_MAPPING); accept needs a trunk transformers can build", display)
    # quantization_config is dropped: the weights arrive dequantized (mtp.quant)
    clean = {k: v for k, v in tc.items()
             if k not in ("model_type", "auto_map", "quantization_config")}
    try:
        return CONFIG_MAPPING[built].from_dict(clean)
    except Exception as exc:  # transformers raises many types for bad configs
        raise CkptAuditError(f"config.json does not make a {built} config: {exc}",
                             display) from None


def _apply_plan(module: nn.Module, plan: mapping.Plan, reader: WeightSource,
                skip: set[str], what: str) -> None:
    """Copy checkpoint tensors into ``module`` per ``plan``; strict on names and shapes."""
    targets = {k: v for k, v in module.state_dict().items() if k not in skip}
    missing_in_plan = [k for k in targets if k not in plan and k not in skip]
    if missing_in_plan:
        raise CkptAuditError(f"{what}: no checkpoint name for {missing_in_plan[:5]}",
                             reader.display)
    have = reader.tensors()
    plan = mapping.fuse_experts(plan, set(have))

    def sources(k: str) -> tuple[str, ...]:
        src = plan[k][0]
        return src if isinstance(src, tuple) else (src,)

    absent = sorted({ck for k in plan if k in targets for ck in sources(k) if ck not in have})
    if absent:
        more = f" and {len(absent) - 5} more" if len(absent) > 5 else ""
        raise CkptAuditError(f"{what}: checkpoint lacks {absent[:5]}{more}", reader.display)
    keys = [k for k in targets if k in plan]
    for start in range(0, len(keys), _READ_GROUP):
        group = keys[start : start + _READ_GROUP]
        arrays = reader.read_many(sorted({ck for k in group for ck in sources(k)}))
        for k in group:
            src, fn = plan[k]
            if isinstance(src, tuple):
                arr = np.asarray(fn([arrays[c] for c in src]))
            else:
                arr = np.asarray(fn(arrays[src]) if fn else arrays[src])
            dst = targets[k]
            if tuple(arr.shape) != tuple(dst.shape):
                raise CkptAuditError(f"{what}: {src if isinstance(src, str) else src[0]} has "
                                     f"shape {list(arr.shape)}, the model expects "
                                     f"{list(dst.shape)} for {k}", reader.display)
            with torch.no_grad():
                dst.copy_(torch.from_numpy(np.array(arr, copy=True)))


def _detect_layout(names: set[str], n_layers: int, layout: str | None,
                   display: str, declared: int) -> tuple[LayoutSpec, int]:
    if layout is not None and layout != "auto":
        if layout not in layouts.LAYOUTS:
            raise CkptAuditError(f"--layout must be auto or one of {', '.join(layouts.LAYOUTS)}")
        spec = layouts.LAYOUTS[layout]
        found = layouts.count_depths(spec, names, n_layers)
    else:
        counts = [(layouts.count_depths(s, names, n_layers), s) for s in layouts.LAYOUTS.values()]
        found, spec = max(counts, key=lambda c: c[0])
    if found == 0:
        decl = f"config declares {declared} MTP depth(s) but " if declared else ""
        raise CkptAuditError(
            f"{decl}no MTP tensors found; looked for: " + "; ".join(layouts.looked_for(n_layers)),
            display)
    return spec, found


def load(path: str, *, layout: str | None = None, order: str | None = None,
         device: str = "auto", dtype: str = "auto", device_map: str | None = None,
         max_depths: int | None = None) -> Loaded:
    """Open ``path`` and return the trunk and its MTP chain, ready on ``device``.

    The reader is closed on return: every tensor has been copied into the modules by then."""
    dev = resolve_device(device)
    with open_checkpoint(path) as reader:
        return _load(reader, dev, layout=layout, order=order, dtype=dtype,
                     device_map=device_map, max_depths=max_depths)


def _load(reader: CheckpointReader, dev: torch.device, *, layout: str | None, order: str | None,
          dtype: str, device_map: str | None, max_depths: int | None) -> Loaded:
    from transformers import AutoModelForCausalLM

    names = set(reader.tensors())
    raw = reader.config()
    # before anything else: quantized weights are dequantized right or refused
    source = WeightSource(reader, quant.detect(raw, reader.tensors(), reader.display))
    # the audit's convention (model types, Megatron/NeMo 1p flags), from the config as stored
    convention, why = detect_convention(raw)
    megatron = mapping.is_megatron_trunk(names)
    if megatron and "model_type" not in text_config(raw):
        if convention is not Convention.DIRECT or str(raw.get("normalization", "RMSNorm")) \
                != "RMSNorm":
            raise CkptAuditError(f"Megatron-core args with {why}, normalization "
                                 f"{raw.get('normalization', 'RMSNorm')!r}: accept builds "
                                 "Megatron trunks as Llama (RMSNorm, γ = w) only", reader.display)
        if "num_layers" not in raw or "hidden_size" not in raw:
            raise CkptAuditError("Megatron-core names but neither config.json nor args with "
                                 "num_layers/hidden_size", reader.display)
        emb = reader.tensors()["embedding.word_embeddings.weight"]
        raw = megatron_config(raw, int(emb.shape[0]))
    if not raw:
        raise CkptAuditError("no config.json (accept must build the model)", reader.display)
    n_layers = num_layers_from_config(raw)
    if n_layers is None:
        raise CkptAuditError("config has no num_hidden_layers", reader.display)
    declared, _ = mtp_count_from_config(raw)
    spec, found = _detect_layout(names, n_layers, layout, reader.display, declared)
    notes: list[str] = []
    if declared and found < declared:
        notes.append(f"config declares {declared} MTP depths, the checkpoint has {found}")
    n_depths = min(found, max_depths) if max_depths else found
    order = order or spec.default_order
    if order not in ORDERS:
        raise CkptAuditError(f"--concat-order must be one of {', '.join(ORDERS)}")
    torch_dtype = resolve_dtype(dtype, raw, dev)

    config = hf_config(raw, reader.display)
    try:
        model = AutoModelForCausalLM.from_config(config, dtype=torch_dtype)
    except Exception as exc:
        raise CkptAuditError(f"transformers cannot build this architecture: {exc}",
                             reader.display) from None
    tied = bool(getattr(config, "tie_word_embeddings", False))
    skip = {"lm_head.weight"} if tied and "lm_head.weight" not in names else set()
    attn = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    dims = mapping.Dims(config.hidden_size, config.num_attention_heads,
                        getattr(config, "num_key_value_heads", None)
                        or config.num_attention_heads, attn)
    if megatron:
        plan = mapping.megatron_trunk_plan(n_layers, dims, names, tied)
    else:
        plan = {k: (k, None) for k in model.state_dict()}
    _apply_plan(model, plan, source, skip, "trunk")
    model.eval()

    trunk = Trunk(model)
    depths = [_build_depth(model, config, spec, k, n_layers, names, dims, source, order,
                           torch_dtype) for k in range(n_depths)]
    if device_map == "auto":
        from accelerate import dispatch_model, infer_auto_device_map

        dmap = infer_auto_device_map(model, no_split_module_classes=model._no_split_modules,
                                     dtype=torch_dtype)
        model = dispatch_model(model, device_map=dmap)
        last_dev = next(trunk.last.parameters()).device
        for d in depths:
            d.to(last_dev)
        dev = next(trunk.embed.parameters()).device
    elif device_map not in (None, "none"):
        raise CkptAuditError("--device-map must be auto or none")
    else:
        model.to(dev)
        for d in depths:
            d.to(dev)
    vocab = int(model.get_output_embeddings().weight.shape[0])
    return Loaded(model, trunk, depths, spec.name, order, raw, n_layers, vocab, dev,
                  torch_dtype, reader.display,
                  convention is Convention.OFFSET, notes,
                  source.stored_dtype(), source.quant)


def _build_depth(model: Any, config: Any, spec: LayoutSpec, k: int,
                 n_layers: int, names: set[str], dims: mapping.Dims,
                 reader: WeightSource, order: str, torch_dtype: torch.dtype) -> MtpDepth:
    """One MTP depth: a decoder layer of the trunk's class at index N+k, plus its norms."""
    base = model.get_decoder()
    cfg = copy.deepcopy(config)
    if isinstance(getattr(cfg, "layer_types", None), list):  # Qwen3-Next: MTP is full attention
        cfg.layer_types = list(cfg.layer_types) + ["full_attention"] * (k + 1)
    layer_cls = type(base.layers[n_layers - 1])
    norm_cls = type(base.norm)
    eps = float(getattr(config, "rms_norm_eps", None) or getattr(config, "layer_norm_eps", None)
                or 1e-6)
    prefix = spec.prefix.format(k=k, layer=n_layers + k)
    bias = f"{prefix}{spec.parts['eh_proj']}.bias" in names
    depth = MtpDepth(layer_cls(cfg, layer_idx=n_layers + k),
                     lambda: norm_cls(config.hidden_size, eps=eps), config.hidden_size,
                     order=order, proj_bias=bias).to(torch_dtype)
    plan = mapping.depth_plan(spec, k, n_layers, depth.state_dict(), names, dims)
    _apply_plan(depth, plan, reader, set(), f"MTP depth {k + 1} ({spec.name})")
    return depth.eval()
