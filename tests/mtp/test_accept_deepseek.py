"""DeepSeek-V3 (MLA attention, MoE block) trunk + an MTP layer in DeepSeek HF naming.

The checkpoint is written the way DeepSeek-V3 is released: per-expert tensors
(``mlp.experts.{e}.gate_proj.weight``...), MTP at ``model.layers.{N}`` with enorm/hnorm/eh_proj/
shared_head.norm. Its drafts are recomputed here independently from the transformers model of
N+1 layers (its last layer is the MTP block) and compared with what accept scores.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from tests.support.accept import accept_json as accept_run

N = 2


def _config() -> dict[str, Any]:
    return dict(vocab_size=160, hidden_size=32, intermediate_size=64, moe_intermediate_size=16,
                num_hidden_layers=N, num_attention_heads=4, num_key_value_heads=4,
                n_shared_experts=1, n_routed_experts=4, num_experts_per_tok=2, n_group=1,
                topk_group=1, first_k_dense_replace=1, kv_lora_rank=16, q_lora_rank=24,
                qk_rope_head_dim=8, qk_nope_head_dim=8, v_head_dim=8,
                max_position_embeddings=128, tie_word_embeddings=False, rms_norm_eps=1e-6)


def _rms(x: torch.Tensor, w: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


@pytest.fixture(scope="module")
def deepseek(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any, dict[str, Any]]:
    from transformers import DeepseekV3Config, DeepseekV3ForCausalLM

    from tests.support.mtp_fixture import write_checkpoint

    torch.manual_seed(0)
    big = DeepseekV3ForCausalLM(DeepseekV3Config(**{**_config(), "num_hidden_layers": N + 1}))
    big.eval()
    sd: dict[str, np.ndarray] = {}
    for k, v in big.state_dict().items():
        a = v.detach().float().numpy()
        if k.endswith("mlp.experts.gate_up_proj"):  # release layout: one tensor per expert
            base = k[: -len("gate_up_proj")]
            inter = a.shape[1] // 2
            for e in range(a.shape[0]):
                sd[f"{base}{e}.gate_proj.weight"] = a[e, :inter]
                sd[f"{base}{e}.up_proj.weight"] = a[e, inter:]
        elif k.endswith("mlp.experts.down_proj"):
            for e in range(a.shape[0]):
                sd[f"{k[: -len('down_proj')]}{e}.down_proj.weight"] = a[e]
        else:
            sd[k] = a
    rng = np.random.default_rng(0)
    p = f"model.layers.{N}."
    extra = {"enorm.weight": 1 + 0.1 * rng.normal(size=32),
             "hnorm.weight": 1 + 0.1 * rng.normal(size=32),
             "shared_head.norm.weight": 1 + 0.1 * rng.normal(size=32),
             "eh_proj.weight": 0.2 * rng.normal(size=(32, 64))}
    for k, v in extra.items():
        sd[p + k] = v.astype(np.float32)
    cfg = {"model_type": "deepseek_v3", "architectures": ["DeepseekV3ForCausalLM"],
           **_config(), "num_nextn_predict_layers": 1}
    ck = write_checkpoint(tmp_path_factory.mktemp("dsv3") / "ck", cfg, sd)
    return ck, big, {k: torch.tensor(v, dtype=torch.float32) for k, v in extra.items()}


def test_deepseek_v3_drafts_match_independent_computation(deepseek: Any, tmp_path: Path) -> None:
    ck, big, extra = deepseek
    g = torch.Generator().manual_seed(1)
    seqs = [torch.randint(0, 160, (n,), generator=g).tolist() for n in (20, 17, 12)]
    probe = tmp_path / "p.jsonl"
    import json

    probe.write_text("".join(json.dumps({"input_ids": s}) + "\n" for s in seqs))
    res = accept_run(str(ck), str(probe), device="cpu", batch_size=2)
    assert res["layout"] == "deepseek-hf" and res["concat_order"] == "embedding-first"
    # independent: the N+1-layer transformers model; its layer N is the MTP block
    agree = n_pairs = 0
    ent_q = 0.0
    with torch.no_grad():
        for s in seqs:
            ids = torch.tensor([s])
            x = big.model.embed_tokens(ids)
            pos = torch.arange(len(s))[None]
            pe = big.model.rotary_emb(x, pos)
            for layer in big.model.layers[:N]:
                x = layer(x, position_embeddings=pe, position_ids=pos, attention_mask=None)
            h = x  # output of the last main block, before the final norm
            p_logits = big.lm_head(_rms(h, big.model.norm.weight))
            e = big.model.embed_tokens(torch.tensor([s[1:] + [0]]))
            z = torch.cat([_rms(e, extra["enorm.weight"]), _rms(h, extra["hnorm.weight"])], -1)
            z = z @ extra["eh_proj.weight"].T
            z = big.model.layers[N](z, position_embeddings=pe, position_ids=pos,
                                    attention_mask=None)
            q_logits = big.lm_head(_rms(z, extra["shared_head.norm.weight"]))
            q = q_logits[0, : len(s) - 1]
            agree += int((q.argmax(-1) == p_logits[0, 1:].argmax(-1)).sum())
            lq = torch.log_softmax(q.double(), -1)
            ent_q += float(-(lq.exp() * lq).sum())
            n_pairs += len(s) - 1
    d = res["depths"][0]
    assert d["pairs"] == n_pairs
    assert d["greedy_acceptance"] == pytest.approx(agree / n_pairs)
    assert d["draft_entropy"] == pytest.approx(ent_q / n_pairs, rel=1e-5)


def test_deepseek_v3_missing_expert_is_named(deepseek: Any, tmp_path: Path) -> None:
    from safetensors.numpy import load_file

    from ckpt_audit.errors import CkptAuditError
    from ckpt_audit.mtp.loader import load
    from tests.support.mtp_fixture import write_checkpoint

    ck, _, _ = deepseek
    import json

    cfg = json.loads((ck / "config.json").read_text())
    sd = load_file(str(ck / "model.safetensors"))
    del sd[f"model.layers.{N}.mlp.experts.3.down_proj.weight"]
    bad = write_checkpoint(tmp_path / "bad", cfg, sd)
    with pytest.raises(CkptAuditError, match="MTP depth 1"):
        load(str(bad), device="cpu")
