"""The accept command end to end: JSON schema, errors, text probes, layouts, torchrun."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.support.accept import accept_json as accept_run

ROOT = Path(__file__).resolve().parents[2]


def _tensors(ckpt: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    return load_file(str(ckpt / "model.safetensors"))


def _write(out: Path, cfg: dict[str, Any], tensors: dict[str, np.ndarray]) -> Path:
    from tests.support.mtp_fixture import write_checkpoint

    return write_checkpoint(out, cfg, tensors)


def _cfg(ckpt: Path) -> dict[str, Any]:
    return json.loads((ckpt / "config.json").read_text())


def test_json_schema(cli: Any, fixture_ckpt: Path, probe_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    r = cli(["accept", str(fixture_ckpt), "--probe", str(probe_file), "-t", "1", "-t", "0.7",
             "--format", "json", "-o", str(out), "--device", "cpu", "-q"])
    assert r.code == 0, r.err
    res = json.loads(out.read_text())
    assert res["schema"] == "ckpt-audit.accept/1"
    from ckpt_audit.report.schemas import validate

    validate(res)  # the shipped JSON Schema (docs/SCHEMAS.md)
    assert res["checkpoint"].endswith("ckpt")
    lines = [json.loads(x) for x in probe_file.read_text().splitlines()]
    assert res["positions"] == sum(len(x["input_ids"]) for x in lines)
    (d,) = res["depths"]
    for key, typ in (("depth", int), ("pairs", int), ("greedy_acceptance", float),
                     ("sampled_acceptance", dict), ("label_accuracy", float),
                     ("verifier_entropy", float), ("draft_entropy", float)):
        assert isinstance(d[key], typ), key
    assert list(d["sampled_acceptance"]) == ["1.0", "0.7"]  # str(float(T))
    assert d["pairs"] == sum(len(x["input_ids"]) - 1 for x in lines)
    assert isinstance(res["expected_tokens_per_step"], float)
    assert res["expected_tokens_per_step"] == pytest.approx(1 + d["cumulative_acceptance"])
    assert 0 < d["greedy_acceptance"] < 1


def test_table_output(cli: Any, fixture_ckpt: Path, probe_file: Path) -> None:
    r = cli(["accept", str(fixture_ckpt), "--probe", str(probe_file), "--device", "cpu", "-q",
             "--max-docs", "4"])
    assert r.code == 0, r.err
    assert "Teacher-forced acceptance" in r.out and "expected tokens per verifier step" in r.out


def test_no_mtp_tensors_says_what_was_looked_for(cli: Any, fixture_ckpt: Path, probe_file: Path,
                                                 tmp_path: Path) -> None:
    t = {k: v for k, v in _tensors(fixture_ckpt).items() if not k.startswith("model.layers.5.")}
    ck = _write(tmp_path / "trunk", _cfg(fixture_ckpt), t)
    r = cli(["accept", str(ck), "--probe", str(probe_file), "--device", "cpu"])
    assert r.code == 2
    assert "config declares 1 MTP depth" in r.err
    for name in ("model.layers.5.enorm.weight", "mtp.layers.0.enorm.weight",
                 "mtp.pre_fc_norm_embedding.weight", "model.mtp_layers.0.token_layernorm.weight"):
        assert name in r.err
    assert "Traceback" not in r.err


@pytest.mark.parametrize("lines, message", [
    ([{"input_ids": [1, 5, 600, 7]}], "token id 600 is outside the model's vocabulary [0, 512)"),
    ([{"input_ids": [1, -3, 7]}], "token id -3 is outside"),
    ([{"input_ids": [1]}, {"input_ids": []}], "empty probe"),
    ([{"txt": "x"}], "needs an 'input_ids' or 'text' field"),
])
def test_bad_probes(cli: Any, fixture_ckpt: Path, tmp_path: Path, lines: list[Any],
                    message: str) -> None:
    probe = tmp_path / "p.jsonl"
    probe.write_text("".join(json.dumps(x) + "\n" for x in lines))
    r = cli(["accept", str(fixture_ckpt), "--probe", str(probe), "--device", "cpu"])
    assert r.code == 2 and message in r.err and str(probe) in r.err


def test_empty_probe_file(cli: Any, fixture_ckpt: Path, tmp_path: Path) -> None:
    probe = tmp_path / "empty.txt"
    probe.write_text("\n\n")
    r = cli(["accept", str(fixture_ckpt), "--probe", str(probe), "--device", "cpu"])
    assert r.code == 2 and "empty probe" in r.err


def test_architecture_transformers_cannot_build(cli: Any, fixture_ckpt: Path, probe_file: Path,
                                                tmp_path: Path) -> None:
    ck = tmp_path / "odd"
    shutil.copytree(fixture_ckpt, ck)
    cfg = _cfg(ck)
    cfg["model_type"] = "not_a_real_arch"
    (ck / "config.json").write_text(json.dumps(cfg))
    r = cli(["accept", str(ck), "--probe", str(probe_file), "--device", "cpu"])
    assert r.code == 2 and "transformers cannot build model_type 'not_a_real_arch'" in r.err


def test_cuda_absent(cli: Any, fixture_ckpt: Path, probe_file: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA is present here")
    r = cli(["accept", str(fixture_ckpt), "--probe", str(probe_file), "--device", "cuda"])
    assert r.code == 2 and "no CUDA device" in r.err


def test_text_probe_with_tokenizer_json(fixture_ckpt: Path, tmp_path: Path) -> None:
    """Plain-text and JSONL-text probes go through tokenizer.json (tokenizers library)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    words = "once upon a time there was little girl named lily she liked to play".split()
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, **{w: 300 + i for i, w in enumerate(words)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[
        ("<s>", 1)])
    ck = tmp_path / "withtok"
    shutil.copytree(fixture_ckpt, ck)
    tok.save(str(ck / "tokenizer.json"))
    docs = ["once upon a time there was a little girl", "she liked to play", "lily"]
    plain = tmp_path / "p.txt"
    plain.write_text("\n".join(docs) + "\n")
    jl = tmp_path / "p.jsonl"
    jl.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    expect = [len(d.split()) + 1 for d in docs]
    for probe in (plain, jl):
        res = accept_run(str(ck), str(probe), device="cpu")
        assert res["positions"] == sum(expect)
        assert res["depths"][0]["pairs"] == sum(n - 1 for n in expect)
    r = accept_run(str(ck), str(plain), device="cpu", max_tokens=3)
    assert r["positions"] == sum(min(3, n) for n in expect)
    os.remove(ck / "tokenizer.json")
    from ckpt_audit.errors import CkptAuditError

    with pytest.raises(CkptAuditError, match="tokenizer.json does not exist"):
        accept_run(str(ck), str(plain), device="cpu")


# -- layouts: the fixture's own weights renamed; every figure must match ---------------------
def _split_head(t: dict[str, np.ndarray], n: int) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    p = f"model.layers.{n}."
    head = {k[len(p):]: v for k, v in t.items() if k.startswith(p)}
    trunk = {k: v for k, v in t.items() if not k.startswith(p)}
    return trunk, head


PARTS = ("enorm.weight", "hnorm.weight", "eh_proj.weight", "shared_head.norm.weight")


def _mimo(t: dict[str, np.ndarray], d: int) -> dict[str, np.ndarray]:
    trunk, head = _split_head(t, 5)
    q = "model.mtp_layers.0."
    out = dict(trunk)
    out[q + "token_layernorm.weight"] = head["enorm.weight"]
    out[q + "hidden_layernorm.weight"] = head["hnorm.weight"]
    w = head["eh_proj.weight"]  # [d, 2d], columns [emb | hidden]; MiMo is hidden first
    out[q + "input_proj.weight"] = np.concatenate([w[:, d:], w[:, :d]], axis=1)
    out[q + "final_layernorm.weight"] = head["shared_head.norm.weight"]
    out.update({q + k: v for k, v in head.items() if k not in PARTS})
    return out


def _qwen3_next(t: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    trunk, head = _split_head(t, 5)
    out = dict(trunk)
    out["mtp.pre_fc_norm_embedding.weight"] = head["enorm.weight"]
    out["mtp.pre_fc_norm_hidden.weight"] = head["hnorm.weight"]
    out["mtp.fc.weight"] = head["eh_proj.weight"]
    out["mtp.norm.weight"] = head["shared_head.norm.weight"]
    out.update({"mtp.layers.0." + k: v for k, v in head.items() if k not in PARTS})
    return out


def _megatron_layer(hf: dict[str, np.ndarray], heads: int, kv: int) -> dict[str, np.ndarray]:
    """One HF Llama layer in Megatron-core + Transformer Engine names (fused QKV per group)."""
    q, k, v = (hf[f"self_attn.{x}_proj.weight"] for x in "qkv")
    hd = k.shape[0] // kv
    per = heads // kv
    groups = [np.concatenate([q[g * per * hd:(g + 1) * per * hd], k[g * hd:(g + 1) * hd],
                              v[g * hd:(g + 1) * hd]]) for g in range(kv)]
    return {
        "self_attention.linear_qkv.weight": np.concatenate(groups),
        "self_attention.linear_qkv.layer_norm_weight": hf["input_layernorm.weight"],
        "self_attention.linear_proj.weight": hf["self_attn.o_proj.weight"],
        "mlp.linear_fc1.weight": np.concatenate([hf["mlp.gate_proj.weight"],
                                                 hf["mlp.up_proj.weight"]]),
        "mlp.linear_fc1.layer_norm_weight": hf["post_attention_layernorm.weight"],
        "mlp.linear_fc2.weight": hf["mlp.down_proj.weight"],
    }


def _megatron(t: dict[str, np.ndarray], cfg: dict[str, Any]) -> tuple[dict[str, np.ndarray],
                                                                        dict[str, Any]]:
    heads, kv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    out = {"embedding.word_embeddings.weight": t["model.embed_tokens.weight"],
           "decoder.final_layernorm.weight": t["model.norm.weight"]}
    for i in range(cfg["num_hidden_layers"] + 1):
        p = f"model.layers.{i}."
        hf = {k[len(p):]: v for k, v in t.items() if k.startswith(p)}
        dst = f"decoder.layers.{i}." if i < 5 else "mtp.layers.0.mtp_model_layer."
        out.update({dst + k: v for k, v in _megatron_layer(hf, heads, kv).items()})
    _, head = _split_head(t, 5)
    for a, b in (("enorm", "enorm"), ("hnorm", "hnorm"), ("eh_proj", "eh_proj"),
                 ("final_layernorm", "shared_head.norm")):
        out[f"mtp.layers.0.{a}.weight"] = head[f"{b}.weight"]
    args = {"num_layers": 5, "hidden_size": 64, "ffn_hidden_size": 172,
            "num_attention_heads": heads, "num_query_groups": kv, "norm_epsilon": 1e-5,
            "rotary_base": 10000, "max_position_embeddings": 512, "mtp_num_layers": 1,
            "mtp_loss_scaling_factor": 0.1, "untie_embeddings_and_output_weights": False}
    return out, args


@pytest.mark.parametrize("layout", ["mimo", "qwen3-next", "megatron"])
def test_layouts_match_deepseek_hf(layout: str, fixture_ckpt: Path, probe_file: Path,
                                   loaded: Any, tmp_path: Path) -> None:
    t, cfg = _tensors(fixture_ckpt), _cfg(fixture_ckpt)
    if layout == "mimo":
        t2, cfg2 = _mimo(t, 64), dict(cfg, num_nextn_predict_layers=1)
    elif layout == "qwen3-next":
        t2, cfg2 = _qwen3_next(t), cfg
    else:
        t2, cfg2 = _megatron(t, cfg)
    ck = _write(tmp_path / layout, cfg2, t2)
    ref = accept_run(str(fixture_ckpt), str(probe_file), loaded=loaded, max_docs=8,
                     grad_balance=True)
    got = accept_run(str(ck), str(probe_file), device="cpu", max_docs=8, grad_balance=True)
    assert got["layout"] == layout
    assert got["concat_order"] == ("hidden-first" if layout == "mimo" else "embedding-first")
    for key in ("pairs", "greedy_acceptance", "label_accuracy", "verifier_entropy",
                "draft_entropy"):
        assert got["depths"][0][key] == pytest.approx(ref["depths"][0][key], rel=1e-5), key
    assert got["grad_balance"]["ratio"] == pytest.approx(ref["grad_balance"]["ratio"], rel=1e-4)
    if layout == "mimo":  # the order is a setting: forcing the wrong one changes the drafts
        wrong = accept_run(str(ck), str(probe_file), device="cpu", max_docs=8,
                           concat_order="embedding-first")
        assert wrong["depths"][0]["draft_entropy"] != pytest.approx(
            ref["depths"][0]["draft_entropy"], rel=1e-3)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_torchrun_two_ranks_gloo_equals_one(fixture_ckpt: Path, probe_file: Path,
                                            tmp_path: Path, loaded: Any) -> None:
    """2 CPU ranks (gloo) each score half the probe; the reduced figures equal one process."""
    out = tmp_path / "dp.json"
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1",
               CKPT_AUDIT_DIST_BACKEND="gloo")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
           "--master_addr", "127.0.0.1", "--master_port", str(_free_port()),
           "-m", "ckpt_audit", "accept", str(fixture_ckpt), "--probe", str(probe_file),
           "--device", "cpu", "--format", "json", "-o", str(out), "-q", "-t", "1", "-t", "0.6",
           "--grad-balance", "--batch-size", "4"]
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    dp = json.loads(out.read_text())
    one = accept_run(str(fixture_ckpt), str(probe_file), loaded=loaded, temperatures=(1, 0.6),
                     grad_balance=True, batch_size=4)
    assert dp["world_size"] == 2
    a, b = dp["depths"][0], one["depths"][0]
    assert a["pairs"] == b["pairs"] and a["label_pairs"] == b["label_pairs"]
    for key in ("greedy_acceptance", "label_accuracy", "verifier_entropy", "draft_entropy"):
        assert a[key] == pytest.approx(b[key], rel=1e-9, abs=1e-12), key
    for key in ("1.0", "0.6"):
        assert a["sampled_acceptance"][key] == pytest.approx(b["sampled_acceptance"][key],
                                                             rel=1e-6)
    assert dp["grad_balance"]["ratio"] == pytest.approx(one["grad_balance"]["ratio"], rel=1e-5)


def test_typed_result_and_json_contract(fixture_ckpt: Path, probe_file: Path,
                                        loaded: Any) -> None:
    """accept_run returns a frozen typed result; its JSON keeps ckpt-audit.accept/1's keys, in
    order (the contract of the untyped dicts this replaced, plus stored_dtype/quantization)."""
    import dataclasses

    from ckpt_audit.mtp.engine import accept_run as typed_run
    from ckpt_audit.report.accept import to_dict

    res = typed_run(str(fixture_ckpt), str(probe_file), loaded=loaded, max_docs=3,
                    what_if_renorm=True, speculate=True, spec_new_tokens=4)
    with pytest.raises(dataclasses.FrozenInstanceError):
        res.layout = "x"  # type: ignore[misc]
    doc = to_dict(res)
    assert list(doc) == ["schema", "checkpoint", "layout", "concat_order", "device", "dtype",
                         "stored_dtype", "quantization", "world_size", "sequences",
                         "positions", "batch_size", "max_logits_mb", "positions_per_chunk",
                         "temperatures", "final_gain_ratio", "depths",
                         "expected_tokens_per_step", "expected_tokens_per_step_sampled",
                         "notes", "what_if", "speculate"]
    assert list(doc["depths"][0]) == [
        "depth", "pairs", "greedy_acceptance", "sampled_acceptance", "label_accuracy",
        "label_pairs", "verifier_entropy", "draft_entropy", "cumulative_acceptance",
        "cumulative_sampled_acceptance"]
    assert list(doc["what_if"][0]) == ["kind", "final_scale", "final_gain_ratio", "depths",
                                       "expected_tokens_per_step",
                                       "expected_tokens_per_step_sampled"]
    assert doc["depths"][0]["greedy_acceptance"] == res.chain.depths[0].greedy_acceptance
    assert json.loads(json.dumps(doc)) == doc
