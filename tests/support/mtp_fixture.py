"""A real trunk with a trained MTP head: stories260K (llama2.c) converted to HF-Llama + MTP depth 1.

Used by the tests, the benchmark and ``scripts/make_mtp_fixture.py``. Three steps:

1. :func:`read_llama2c` reads llama2.c's v0 ("legacy") binary through the audit's llama2.c
   reader and restacks it into run.c's layout.
2. :func:`to_hf_state_dict` renames them to Hugging Face Llama names. llama2.c rotates adjacent
   pairs (interleaved rotary); HF rotates the two halves of each head, so q/k rows are permuted
   per head (the inverse of llama2.c's ``permute_reverse`` in ``export.py``). The conversion is
   checked against :func:`reference_logits`, an independent numpy port of run.c's ``forward``.
3. :func:`train_mtp_head` trains a DeepSeek-style depth-1 MTP module (enorm, hnorm, eh_proj
   [d, 2d], one LlamaDecoderLayer, shared_head.norm; embeddings and head shared with the trunk)
   on sequences sampled from the frozen trunk itself, seeded. Saved as ``model.layers.5.*``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ckpt_audit.errors import FormatError


@dataclass(frozen=True)
class Llama2cModel:
    """Header fields and weights (numpy float32, run.c's shapes) of a llama2.c v0 file."""

    dim: int
    hidden_dim: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    vocab_size: int
    seq_len: int
    weights: dict[str, np.ndarray]

    @property
    def head_size(self) -> int:
        return self.dim // self.n_heads


#: run.c's stacked per-layer weights and the reader's per-layer names for them
_PER_LAYER = {
    "rms_att_weight": "input_layernorm.weight", "wq": "self_attn.q_proj.weight",
    "wk": "self_attn.k_proj.weight", "wv": "self_attn.v_proj.weight",
    "wo": "self_attn.o_proj.weight", "rms_ffn_weight": "post_attention_layernorm.weight",
    "w1": "mlp.gate_proj.weight", "w2": "mlp.down_proj.weight", "w3": "mlp.up_proj.weight",
}
_GLOBAL = {
    "token_embedding_table": "model.embed_tokens.weight", "rms_final_weight": "model.norm.weight",
    "freq_cis_real": "rope.freq_cis_real", "freq_cis_imag": "rope.freq_cis_imag",
    "wcls": "lm_head.weight",
}


def read_llama2c(path: str | Path) -> Llama2cModel:
    """Read a llama2.c v0 checkpoint into run.c's layout (stacked per-layer weights).

    The bytes are parsed by the audit's own reader (:mod:`ckpt_audit.readers.llama2c_reader`,
    which checks every offset against the file size); this only restacks its per-layer tensors
    into run.c's ``[n_layers, ...]`` arrays (q/k rows stay in llama2.c's rotary order).
    """
    from ckpt_audit.readers.llama2c_reader import Llama2cReader
    from ckpt_audit.storage import LocalLocation

    with Llama2cReader(LocalLocation(str(path))) as reader:
        cfg = reader.config()
        if cfg.get("llama2c_version") != 0:
            raise FormatError("the fixture needs a llama2.c v0 file", str(path))
        names = list(reader.tensors())
        t = reader.read_many(names)
    n_layers = int(cfg["num_hidden_layers"])
    weights = {k: t[v].astype(np.float32) for k, v in _GLOBAL.items() if v in t}
    for k, v in _PER_LAYER.items():
        weights[k] = np.stack([t[f"model.layers.{i}.{v}"] for i in range(n_layers)]).astype(
            np.float32)
    if "wcls" not in weights:  # shared classifier
        weights["wcls"] = weights["token_embedding_table"]
    return Llama2cModel(int(cfg["hidden_size"]), int(cfg["intermediate_size"]), n_layers,
                        int(cfg["num_attention_heads"]), int(cfg["num_key_value_heads"]),
                        int(cfg["vocab_size"]), int(cfg["max_position_embeddings"]), weights)


def _rms(x: np.ndarray, w: np.ndarray, eps: float = 1e-5) -> np.ndarray:
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * w


def reference_logits(m: Llama2cModel, tokens: list[int]) -> np.ndarray:
    """Logits [T, vocab] of run.c's ``forward`` for every position, in float64 numpy.

    A direct port of run.c (interleaved rotary on adjacent pairs, grouped-query attention,
    SwiGLU, RMSNorm eps 1e-5), kept independent of transformers to check the conversion.
    """
    w = {k: v.astype(np.float64) for k, v in m.weights.items()}
    t = len(tokens)
    hs = m.head_size
    x = w["token_embedding_table"][np.asarray(tokens)]
    pos = np.arange(t)[:, None]
    pair = np.arange(0, hs, 2)
    freq = 1.0 / (10000.0 ** (pair / hs))
    cos, sin = np.cos(pos * freq), np.sin(pos * freq)  # [T, hs/2]

    def rope(v: np.ndarray, heads: int) -> np.ndarray:
        v = v.reshape(t, heads, hs // 2, 2)
        a, b = v[..., 0], v[..., 1]
        c, s = cos[:, None, :], sin[:, None, :]
        return np.stack([a * c - b * s, a * s + b * c], axis=-1).reshape(t, heads, hs)

    mask = np.triu(np.full((t, t), -np.inf), 1)
    for layer in range(m.n_layers):
        xb = _rms(x, w["rms_att_weight"][layer])
        q = rope(xb @ w["wq"][layer].T, m.n_heads)
        k = rope(xb @ w["wk"][layer].T, m.n_kv_heads)
        v = (xb @ w["wv"][layer].T).reshape(t, m.n_kv_heads, hs)
        rep = m.n_heads // m.n_kv_heads
        k, v = np.repeat(k, rep, axis=1), np.repeat(v, rep, axis=1)
        att = np.einsum("qhd,khd->hqk", q, k) / np.sqrt(hs) + mask
        att = np.exp(att - att.max(-1, keepdims=True))
        att /= att.sum(-1, keepdims=True)
        out = np.einsum("hqk,khd->qhd", att, v).reshape(t, m.dim)
        x = x + out @ w["wo"][layer].T
        xb = _rms(x, w["rms_ffn_weight"][layer])
        h1, h3 = xb @ w["w1"][layer].T, xb @ w["w3"][layer].T
        x = x + (h1 / (1.0 + np.exp(-h1)) * h3) @ w["w2"][layer].T
    return _rms(x, w["rms_final_weight"]) @ w["wcls"].T  # type: ignore[no-any-return]


def _permute(w: np.ndarray, heads: int) -> np.ndarray:
    """Interleaved-pair rotary rows (llama2.c) -> half-split rotary rows (HF), per head."""
    rows, cols = w.shape
    return w.reshape(heads, rows // heads // 2, 2, cols).transpose(0, 2, 1, 3).reshape(rows, cols)


def hf_config(m: Llama2cModel, mtp_layers: int = 1) -> dict[str, Any]:
    """config.json of the converted model (Llama, tied head, DeepSeek-style MTP declared)."""
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": m.vocab_size,
        "hidden_size": m.dim,
        "intermediate_size": m.hidden_dim,
        "num_hidden_layers": m.n_layers,
        "num_attention_heads": m.n_heads,
        "num_key_value_heads": m.n_kv_heads,
        "max_position_embeddings": m.seq_len,
        "rms_norm_eps": 1e-5,
        "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0},
        "hidden_act": "silu",
        "tie_word_embeddings": True,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "torch_dtype": "float32",
        "num_nextn_predict_layers": mtp_layers,
    }


def to_hf_state_dict(m: Llama2cModel) -> dict[str, np.ndarray]:
    """The trunk's weights under HF Llama names (``lm_head`` tied to the embedding, omitted)."""
    w = m.weights
    sd = {"model.embed_tokens.weight": w["token_embedding_table"],
          "model.norm.weight": w["rms_final_weight"]}
    for i in range(m.n_layers):
        p = f"model.layers.{i}."
        sd[p + "input_layernorm.weight"] = w["rms_att_weight"][i]
        sd[p + "post_attention_layernorm.weight"] = w["rms_ffn_weight"][i]
        sd[p + "self_attn.q_proj.weight"] = _permute(w["wq"][i], m.n_heads)
        sd[p + "self_attn.k_proj.weight"] = _permute(w["wk"][i], m.n_kv_heads)
        sd[p + "self_attn.v_proj.weight"] = w["wv"][i]
        sd[p + "self_attn.o_proj.weight"] = w["wo"][i]
        sd[p + "mlp.gate_proj.weight"] = w["w1"][i]
        sd[p + "mlp.down_proj.weight"] = w["w2"][i]
        sd[p + "mlp.up_proj.weight"] = w["w3"][i]
    if w["wcls"] is not w["token_embedding_table"]:
        sd["lm_head.weight"] = w["wcls"]
    return {k: np.ascontiguousarray(v) for k, v in sd.items()}


# --------------------------------------------------------------------------------------------
# torch part: build the HF trunk, sample from it, train the MTP head, write the folder.

MTP_PREFIX = "model.layers.{n}."


def build_trunk(m: Llama2cModel) -> Any:
    """The converted trunk as a transformers ``LlamaForCausalLM`` (float32, eval mode)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg = hf_config(m)
    cfg.pop("architectures")
    config = AutoConfig.for_model(**cfg)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    sd = {k: torch.from_numpy(v.copy()) for k, v in to_hf_state_dict(m).items()}
    missing, unexpected = model.load_state_dict(sd, strict=False)
    missing = [k for k in missing if k != "lm_head.weight"]
    if missing or unexpected:
        raise RuntimeError(f"conversion mismatch: missing {missing}, unexpected {unexpected}")
    model.tie_weights()
    return model.eval()


def new_mtp_depth(trunk_model: Any, seed: int) -> Any:
    """A freshly initialised depth-1 module for the trunk (block initialised from the last block).

    Starting the block from the trunk's last block (a common trick) makes a couple of CPU minutes
    enough; eh_proj starts as [0, I] so the first steps pass h through unchanged.
    """
    import copy

    import torch

    from ckpt_audit.mtp.modules import MtpDepth

    torch.manual_seed(seed)
    cfg = trunk_model.config
    n = cfg.num_hidden_layers
    norm_cls = type(trunk_model.model.norm)
    block = copy.deepcopy(trunk_model.model.layers[n - 1])
    block.self_attn.layer_idx = n
    mtp = MtpDepth(block, lambda: norm_cls(cfg.hidden_size, eps=cfg.rms_norm_eps),
                   cfg.hidden_size)
    with torch.no_grad():
        d = cfg.hidden_size
        mtp.eh_proj.weight.zero_()
        mtp.eh_proj.weight[:, d:] = torch.eye(d)
        mtp.eh_proj.weight.add_(0.02 * torch.randn_like(mtp.eh_proj.weight))
        mtp.final_norm.weight.copy_(trunk_model.model.norm.weight)
    return mtp


def sample_sequences(trunk_model: Any, n: int, length: int, seed: int,
                     temperature: float = 1.0) -> Any:
    """``n`` sequences of ``length`` tokens sampled from the trunk from BOS, seeded."""
    import torch
    from transformers import DynamicCache

    gen = torch.Generator().manual_seed(seed)
    ids = torch.full((n, 1), 1, dtype=torch.long)
    cache = DynamicCache(config=trunk_model.config)
    step_in = ids
    with torch.no_grad():
        for _ in range(length - 1):
            logits = trunk_model(input_ids=step_in, cache=cache, use_cache=True).logits[:, -1, :]
            probs = torch.softmax(logits / temperature, dim=-1)
            step_in = torch.multinomial(probs, 1, generator=gen)
            ids = torch.cat([ids, step_in], dim=1)
    return ids


def train_mtp_head(trunk_model: Any, seqs: Any, steps: int = 300, batch: int = 16,
                   lr: float = 1e-2, seed: int = 0, log: Callable[[str], None] | None = None
                   ) -> Any:
    """Train a depth-1 MTP module on ``seqs`` with the trunk frozen; returns the module.

    Loss: mean cross-entropy of the draft at position i against t_{i+2} (DeepSeek's MTP loss).
    """
    import torch
    import torch.nn.functional as F

    from ckpt_audit.mtp.modules import Trunk, run_chain

    trunk = Trunk(trunk_model)
    for p in trunk_model.parameters():
        p.requires_grad_(False)
    mtp = new_mtp_depth(trunk_model, seed)
    mtp.train()
    opt = torch.optim.AdamW(mtp.parameters(), lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        outs = [trunk(seqs[i : i + 64]) for i in range(0, len(seqs), 64)]
    for step in range(steps):
        idx = torch.randint(0, len(seqs), (batch,), generator=gen)
        chunk = [(int(i) // 64, int(i) % 64) for i in idx]
        ids = seqs[idx]
        hid = torch.stack([outs[c].hidden[j] for c, j in chunk])
        kw = outs[0].layer_kwargs
        from ckpt_audit.mtp.modules import TrunkOutput

        out = TrunkOutput(logits=None, hidden=hid, layer_kwargs=kw)  # type: ignore[arg-type]
        (draft,) = run_chain(trunk, [mtp], out, ids)
        loss = F.cross_entropy(draft[:, :-2].reshape(-1, draft.shape[-1]), ids[:, 2:].reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if log and (step % 100 == 0 or step == steps - 1):
            log(f"step {step} mtp loss {loss.item():.4f}")
    return mtp.eval()


def mtp_state_dict(mtp: Any, layer: int) -> dict[str, np.ndarray]:
    """The MTP module's weights under DeepSeek-V3 HF names at ``model.layers.{layer}``."""
    p = MTP_PREFIX.format(n=layer)
    out: dict[str, np.ndarray] = {}
    for k, v in mtp.state_dict().items():
        if k.startswith("block."):
            name = p + k[len("block."):]
        elif k == "final_norm.weight":
            name = p + "shared_head.norm.weight"
        else:
            name = p + k
        out[name] = v.detach().cpu().numpy().astype(np.float32)
    return out


def write_checkpoint(out_dir: str | Path, config: dict[str, Any],
                     tensors: dict[str, np.ndarray]) -> Path:
    """Write ``config.json`` + ``model.safetensors`` (written by the safetensors library)."""
    from safetensors.numpy import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()},
              str(out / "model.safetensors"), metadata={"format": "pt"})
    return out


def make_fixture(bin_path: str | Path, out_dir: str | Path, head: dict[str, np.ndarray] | None
                 = None, *, steps: int = 300, n_seqs: int = 128, length: int = 128, seed: int = 0,
                 log: Callable[[str], None] | None = None) -> Path:
    """Convert stories260K and add a depth-1 MTP head (``head`` given, or trained now)."""
    m = read_llama2c(bin_path)
    tensors = to_hf_state_dict(m)
    if head is None:
        import torch

        torch.manual_seed(seed)
        model = build_trunk(m)
        seqs = sample_sequences(model, n_seqs, length, seed)
        head = mtp_state_dict(train_mtp_head(model, seqs, steps=steps, seed=seed, log=log),
                              m.n_layers)
    tensors.update(head)
    return write_checkpoint(out_dir, hf_config(m), tensors)
