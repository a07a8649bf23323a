"""Helpers for the runs/trend/compare/watch/monitor tests: run folders written by real writers,
independent ratio computations (official safetensors library + numpy)."""

from __future__ import annotations

import json
import os

#: step -> factor applied to the final norm's gain (γ = factor · (1 + small noise)); layer gains
#: drift by a milder factor so compare/diff see per-layer differences.
FINAL_FACTORS = {0: 1.0, 100: 0.95, 200: 0.85, 300: 0.30, 400: 2.60}
LAYER_FACTORS = {0: 1.0, 100: 0.98, 200: 0.96, 300: 0.94, 400: 0.92}
HIDDEN = 64


def tiny_llama(seed: int = 0):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(hidden_size=HIDDEN, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, vocab_size=128,
                      max_position_embeddings=64)
    torch.manual_seed(seed)
    return LlamaForCausalLM(cfg)


def set_gains(model, final: float, layer: float, seed: int, layer0_extra: float = 1.0) -> None:
    """Scale the gains in place: final norm by ``final``, layer norms by ``layer``."""
    import torch

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if not name.endswith("norm.weight"):
                continue
            noise = 1 + 0.02 * torch.randn(p.shape, generator=g) if (final, layer) != (1.0, 1.0) \
                else torch.ones(p.shape)
            f = final if name == "model.norm.weight" else layer
            if name.startswith("model.layers.0."):
                f *= layer0_extra
            p.copy_(f * noise)


def write_run(root: str, seed: int = 0, *, layer0_extra: float = 1.0,
              final_factors: dict[int, float] | None = None) -> str:
    """A run folder of ``checkpoint-N`` written with ``save_pretrained`` (2 shards each)."""
    model = tiny_llama(seed)
    for step, final in (final_factors or FINAL_FACTORS).items():
        set_gains(model, final, LAYER_FACTORS[step], seed * 1000 + step,
                  layer0_extra if step else 1.0)
        out = os.path.join(root, f"checkpoint-{step}")
        model.save_pretrained(out, max_shard_size="150KB")
        with open(os.path.join(out, "trainer_state.json"), "w") as fh:
            json.dump({"global_step": step}, fh)
    return root


def norm_ratio(folder: str, name: str = "model.norm.weight") -> float:
    """Independent ratio of one gain: read with the official safetensors library, RMS in numpy."""
    import glob

    import numpy as np
    from safetensors import safe_open

    for f in sorted(glob.glob(os.path.join(folder, "*.safetensors"))):
        with safe_open(f, framework="np") as fh:
            if name in fh.keys():
                w = fh.get_tensor(name).astype(np.float64)
                return float(np.sqrt(np.mean(w * w)))
    raise KeyError(name)


def all_ratios(folder: str) -> dict[str, float]:
    """Every ``*norm.weight`` / ``*layernorm.weight`` ratio of a checkpoint, independently."""
    import glob

    import numpy as np
    from safetensors import safe_open

    out = {}
    for f in sorted(glob.glob(os.path.join(folder, "*.safetensors"))):
        with safe_open(f, framework="np") as fh:
            for k in fh.keys():
                if k.endswith("norm.weight"):
                    w = fh.get_tensor(k).astype(np.float64)
                    out[k] = float(np.sqrt(np.mean(w * w)))
    return out


def tree(root: str) -> dict[str, tuple[int, int]]:
    """Every file under ``root`` with size and mtime (to prove nothing was written there)."""
    out = {}
    for d, _, files in os.walk(root):
        for f in files:
            p = os.path.join(d, f)
            st = os.stat(p)
            out[p] = (st.st_size, st.st_mtime_ns)
    return out


#: step -> ratio of the MTP module's hnorm (the final norm stays healthy in this run).
MTP_HNORM = {0: 1.0, 100: 0.8, 200: 0.3}


def write_mtp_run(root: str, seed: int = 1) -> str:
    """A DeepSeek-V3-style run: a tiny Llama's tensors plus one MTP depth in HF naming
    (``model.layers.{num_hidden_layers}.{enorm,hnorm,eh_proj,shared_head.norm,...}``), written
    with the official ``safetensors.torch.save_file`` and a ``config.json`` declaring
    ``num_nextn_predict_layers = 1``."""
    import torch
    from safetensors.torch import save_file

    model = tiny_llama(seed)
    n = model.config.num_hidden_layers
    g = torch.Generator().manual_seed(seed)
    for step, hratio in MTP_HNORM.items():
        sd = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
        p = f"model.layers.{n}."
        noise = (lambda: 1 + 0.02 * torch.randn(HIDDEN, generator=g)) if step else \
            (lambda: torch.ones(HIDDEN))
        sd[p + "enorm.weight"] = noise()
        sd[p + "hnorm.weight"] = hratio * noise()
        sd[p + "shared_head.norm.weight"] = noise()
        sd[p + "input_layernorm.weight"] = noise()
        sd[p + "post_attention_layernorm.weight"] = noise()
        sd[p + "eh_proj.weight"] = 0.02 * torch.randn(HIDDEN, 2 * HIDDEN, generator=g)
        if step:
            sd["model.norm.weight"] = 0.9 * noise()
        out = os.path.join(root, f"step-{step}")
        os.makedirs(out)
        save_file(sd, os.path.join(out, "model.safetensors"), metadata={"format": "pt"})
        cfg = model.config.to_dict()
        cfg["num_nextn_predict_layers"] = 1
        with open(os.path.join(out, "config.json"), "w") as fh:
            json.dump(cfg, fh)
    return root
