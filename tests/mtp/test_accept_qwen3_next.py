"""Qwen3-Next trunk (gated-delta-net + full attention, MoE, offset RMSNorm) with ``mtp.*``.

Written as Qwen3-Next is released: per-expert tensors, ``mtp.fc``, ``mtp.pre_fc_norm_embedding``,
``mtp.pre_fc_norm_hidden``, ``mtp.norm`` (offset convention: γ = 1 + w) and ``mtp.layers.0.*``
(a full-attention block). Drafts are recomputed independently from transformers' model of N+1
layers, whose last (full-attention) layer is the MTP block, and compared with accept's figures.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from tests.support.accept import accept_json as accept_run

N = 4
CFG: dict[str, Any] = dict(
    vocab_size=160, hidden_size=32, intermediate_size=64, moe_intermediate_size=16,
    shared_expert_intermediate_size=16, num_hidden_layers=N, num_attention_heads=4,
    num_key_value_heads=2, head_dim=8, num_experts=4, num_experts_per_tok=2,
    linear_num_value_heads=4, linear_num_key_heads=2, linear_key_head_dim=8,
    linear_value_head_dim=8, linear_conv_kernel_dim=4, decoder_sparse_step=1, mlp_only_layers=[],
    layer_types=["linear_attention"] * 3 + ["full_attention"], max_position_embeddings=128,
    tie_word_embeddings=False, rms_norm_eps=1e-6)


def _offset_rms(x: torch.Tensor, w: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * (1.0 + w)


def test_qwen3_next_drafts_match_independent_computation(tmp_path: Path) -> None:
    from transformers import Qwen3NextConfig, Qwen3NextForCausalLM

    from tests.support.mtp_fixture import write_checkpoint

    torch.manual_seed(0)
    big = Qwen3NextForCausalLM(Qwen3NextConfig(**{
        **CFG, "num_hidden_layers": N + 1, "layer_types": CFG["layer_types"] + ["full_attention"]}))
    big.eval()
    with torch.no_grad():  # non-trivial offset gains everywhere
        for name, prm in big.named_parameters():
            if "norm" in name and prm.dim() == 1:
                prm.normal_(0, 0.2)
    sd: dict[str, np.ndarray] = {}
    for k, v in big.state_dict().items():
        a = v.detach().float().numpy()
        k = k.replace(f"model.layers.{N}.", "mtp.layers.0.")
        if k.endswith("mlp.experts.gate_up_proj"):
            half = a.shape[1] // 2
            for e in range(a.shape[0]):
                sd[f"{k[:-len('gate_up_proj')]}{e}.gate_proj.weight"] = a[e, :half]
                sd[f"{k[:-len('gate_up_proj')]}{e}.up_proj.weight"] = a[e, half:]
        elif k.endswith("mlp.experts.down_proj"):
            for e in range(a.shape[0]):
                sd[f"{k[:-len('down_proj')]}{e}.down_proj.weight"] = a[e]
        else:
            sd[k] = a
    rng = np.random.default_rng(0)
    extra = {"mtp.pre_fc_norm_embedding.weight": 0.2 * rng.normal(size=32),
             "mtp.pre_fc_norm_hidden.weight": 0.2 * rng.normal(size=32),
             "mtp.norm.weight": 0.2 * rng.normal(size=32),
             "mtp.fc.weight": 0.2 * rng.normal(size=(32, 64))}
    sd.update({k: v.astype(np.float32) for k, v in extra.items()})
    cfg = {"model_type": "qwen3_next", **CFG, "num_nextn_predict_layers": 1}
    ck = write_checkpoint(tmp_path / "ck", cfg, sd)
    ex = {k: torch.tensor(v, dtype=torch.float32) for k, v in extra.items()}

    g = torch.Generator().manual_seed(1)
    seqs = [torch.randint(0, 160, (n,), generator=g).tolist() for n in (14, 9)]
    probe = tmp_path / "p.jsonl"
    probe.write_text("".join(json.dumps({"input_ids": s}) + "\n" for s in seqs))
    res = accept_run(str(ck), str(probe), device="cpu", batch_size=1)
    assert res["layout"] == "qwen3-next"

    agree = pairs = 0
    ent_q = 0.0
    with torch.no_grad():
        for s in seqs:
            ids = torch.tensor([s])
            got: dict[str, torch.Tensor] = {}
            hook = big.model.layers[N - 1].register_forward_hook(
                lambda _m, _a, out, got=got: got.__setitem__("h", out))
            big(input_ids=ids)
            hook.remove()
            h = got["h"]
            p = big.lm_head(big.model.norm(h))[0]
            e = big.model.embed_tokens(torch.tensor([s[1:] + [0]]))
            z = torch.cat([_offset_rms(e, ex["mtp.pre_fc_norm_embedding.weight"]),
                           _offset_rms(h, ex["mtp.pre_fc_norm_hidden.weight"])], -1)
            z = z @ ex["mtp.fc.weight"].T
            pos = torch.arange(len(s))[None]
            z = big.model.layers[N](z, position_embeddings=big.model.rotary_emb(z, pos),
                                    position_ids=pos, attention_mask=None)
            q = big.lm_head(_offset_rms(z, ex["mtp.norm.weight"]))[0, : len(s) - 1]
            agree += int((q.argmax(-1) == p[1:].argmax(-1)).sum())
            lq = torch.log_softmax(q.double(), -1)
            ent_q += float(-(lq.exp() * lq).sum())
            pairs += len(s) - 1
    d = res["depths"][0]
    assert d["pairs"] == pairs
    assert d["greedy_acceptance"] == pytest.approx(agree / pairs)
    assert d["draft_entropy"] == pytest.approx(ent_q / pairs, rel=1e-5)
    # offset convention: the final gain's ratio is RMS(1 + w)
    w = big.model.norm.weight.detach().double()
    assert res["final_gain_ratio"] == pytest.approx(float((1 + w).norm() / 32 ** 0.5))
