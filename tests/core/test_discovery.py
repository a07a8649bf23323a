"""Norm discovery, roles and conventions on checkpoints written by transformers itself."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from ckpt_audit.core.audit import audit_checkpoint
from ckpt_audit.core.discovery import classify_name, discover
from ckpt_audit.records import Convention, Role, Severity, TensorInfo
from tests.support.hf_models import build, perturb_gains

EXPECTED_FINAL = {
    "llama": "model.norm.weight", "qwen3": "model.norm.weight", "gemma": "model.norm.weight",
    "gpt2": "transformer.ln_f.weight", "neox": "gpt_neox.final_layer_norm.weight",
    "deepseek_v3": "model.norm.weight",
}


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, dict]]:
    out = {}
    for fam in EXPECTED_FINAL:
        model = build(fam)
        perturb_gains(model, scale=0.2)
        d = tmp_path_factory.mktemp(fam)
        model.save_pretrained(d)
        out[fam] = (d, {k: v.detach().clone() for k, v in model.state_dict().items()})
    return out


@pytest.mark.parametrize("family", sorted(EXPECTED_FINAL))
def test_roles_and_values_match_state_dict(saved: dict, family: str) -> None:
    folder, sd = saved[family]
    rep = audit_checkpoint(str(folder))
    assert rep.final is not None and rep.final.name == EXPECTED_FINAL[family]
    by_name = {r.name: r for r in rep.norms}
    expected_gains = {k for k in sd if classify_name(k) == "gain"}
    assert set(by_name) == expected_gains
    offset = family == "gemma"
    for name, rec in by_name.items():
        g = sd[name].double() + (1.0 if offset else 0.0)
        assert rec.convention is (Convention.OFFSET if offset else Convention.DIRECT)
        assert rec.stats.dim == g.numel()
        # independent computation in torch float64
        assert rec.stats.norm == pytest.approx(torch.linalg.vector_norm(g).item(), rel=1e-15)
        assert rec.stats.ratio == pytest.approx(g.pow(2).mean().sqrt().item(), rel=1e-14)
    assert rep.d_model == 64


def test_qk_and_latent_roles_use_their_own_length(saved: dict) -> None:
    rep = audit_checkpoint(str(saved["qwen3"][0]))
    qk = [r for r in rep.norms if r.role is Role.QK]
    assert len(qk) == 4 and all(r.stats.dim == 16 for r in qk)
    rep = audit_checkpoint(str(saved["deepseek_v3"][0]))
    lat = {r.name.rsplit(".", 2)[-2]: r.stats.dim for r in rep.norms if r.role is Role.LATENT}
    assert lat == {"q_a_layernorm": 32, "kv_a_layernorm": 16}


def test_biases_are_not_gains(saved: dict) -> None:
    for fam in ("gpt2", "neox"):
        rep = audit_checkpoint(str(saved[fam][0]))
        assert not any(r.name.endswith(".bias") for r in rep.norms)
        assert rep.extra["biases"] == 5


def test_gemma_offset_at_init_is_ratio_one(tmp_path: Path) -> None:
    build("gemma").save_pretrained(tmp_path)
    rep = audit_checkpoint(str(tmp_path), expect_init=True)
    assert all(r.stats.ratio == 1.0 for r in rep.norms)
    assert not [f for f in rep.findings if f.code == "init-mismatch"]
    # reading the same zeros as direct gains collapses everything: the convention matters
    rep = audit_checkpoint(str(tmp_path), convention=Convention.DIRECT)
    assert rep.final is not None and rep.final.stats.norm == 0.0
    assert rep.verdict == "fail"


def _append_mtp(folder: Path, sd: dict, complete: bool = True) -> None:
    """Append a DeepSeek-V3 MTP layer in HF naming (model.layers.N.*) as an extra shard."""
    n = 2
    mtp = {f"model.layers.{n}.{k.split('.', 3)[3]}": v.clone() for k, v in sd.items()
           if k.startswith("model.layers.1.")}
    p = f"model.layers.{n}."
    mtp[p + "enorm.weight"] = torch.full((64,), 0.9)
    mtp[p + "hnorm.weight"] = torch.full((64,), 0.3)
    mtp[p + "eh_proj.weight"] = torch.randn(64, 128)
    if complete:
        mtp[p + "shared_head.norm.weight"] = torch.full((64,), 1.2)
    main = load_file(folder / "model.safetensors")
    save_file(main, folder / "model-00001-of-00002.safetensors")
    save_file({k: v.contiguous() for k, v in mtp.items()},
              folder / "model-00002-of-00002.safetensors")
    (folder / "model.safetensors").unlink()
    wm = {k: "model-00001-of-00002.safetensors" for k in main}
    wm.update({k: "model-00002-of-00002.safetensors" for k in mtp})
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": wm}))


def test_deepseek_v3_mtp_layer(tmp_path: Path, saved: dict) -> None:
    folder, sd = saved["deepseek_v3"]
    # save_pretrained dropped the MTP layer that the config declares: a failing finding
    rep = audit_checkpoint(str(folder))
    assert [f.code for f in rep.findings if f.severity is Severity.FAIL] == ["mtp-missing"]
    import shutil

    for complete in (True, False):
        d = tmp_path / f"c{complete}"
        shutil.copytree(folder, d)
        _append_mtp(d, sd, complete)
        rep = audit_checkpoint(str(d))
        mtp = {r.name: r for r in rep.norms if r.role is Role.MTP}
        assert "model.layers.2.hnorm.weight" in mtp
        assert mtp["model.layers.2.hnorm.weight"].stats.ratio == pytest.approx(0.3)
        assert mtp["model.layers.2.hnorm.weight"].severity is Severity.WARN  # collapse → warn
        assert rep.final is not None and rep.final.name == "model.norm.weight"
        codes = [f.code for f in rep.findings if f.severity is Severity.FAIL]
        assert codes == ([] if complete else ["mtp-incomplete"])
        if not complete:
            assert "shared_head.norm.weight" in next(
                f.message for f in rep.findings if f.code == "mtp-incomplete")


@pytest.mark.parametrize("name,shape,dtype,kind", [
    ("model.norm.weight", (8, 8), "F32", "shape"),
    ("model.norm.weight", (8,), "I64", "dtype"),
])
def test_norm_named_but_not_a_gain(name: str, shape: tuple, dtype: str, kind: str) -> None:
    disc = discover({name: TensorInfo(name, shape, dtype, "f")}, {})
    assert not disc.gains
    assert [f.code for f in disc.findings] == ["not-a-gain"]


@pytest.mark.parametrize("name,expected", [
    ("decoder.final_layernorm.weight", "gain"),
    ("decoder.layers.3.self_attention.linear_qkv.layer_norm_weight", "gain"),
    ("decoder.layers.3.self_attention.linear_qkv.layer_norm_bias", "bias"),
    ("bert.encoder.layer.0.output.LayerNorm.gamma", "gain"),
    ("bert.encoder.layer.0.output.LayerNorm.beta", "bias"),
    ("blk.0.attn_norm.weight", "gain"),
    ("output_norm.weight", "gain"),
    ("model.layers.0.mlp.down_proj.weight", None),
    ("model.embed_tokens.weight", None),
])
def test_classify_name(name: str, expected: str | None) -> None:
    assert classify_name(name) == expected


def test_megatron_and_gguf_names_get_roles() -> None:
    names = {
        "decoder.final_layernorm.weight": (64,),
        "decoder.layers.0.self_attention.linear_qkv.layer_norm_weight": (64,),
        "decoder.layers.0.self_attention.q_layernorm.weight": (16,),
        "mtp.layers.0.enorm.weight": (64,), "mtp.layers.0.hnorm.weight": (64,),
        "mtp.layers.0.eh_proj.weight": (64, 128), "mtp.layers.0.final_layernorm.weight": (64,),
        "mtp.layers.0.transformer_layer.input_layernorm.weight": (64,),
    }
    tensors = {k: TensorInfo(k, v, "F32", "f") for k, v in names.items()}
    disc = discover(tensors, {"mtp_num_layers": 1})
    roles = {c.name: c.role for c in disc.gains}
    assert roles["decoder.final_layernorm.weight"] is Role.FINAL
    assert roles["decoder.layers.0.self_attention.linear_qkv.layer_norm_weight"] is Role.LAYER
    assert roles["decoder.layers.0.self_attention.q_layernorm.weight"] is Role.QK
    assert all(roles[n] is Role.MTP for n in roles if n.startswith("mtp."))
    assert disc.mtp_layout == "megatron" and not disc.findings
    g = {k: TensorInfo(k, (32,), "F32", "f") for k in
         ("output_norm.weight", "blk.0.attn_norm.weight", "blk.0.attn_q_norm.weight")}
    roles = {c.name: c.role for c in discover(g, {}).gains}
    assert roles == {"output_norm.weight": Role.FINAL, "blk.0.attn_norm.weight": Role.LAYER,
                     "blk.0.attn_q_norm.weight": Role.QK}


def test_olmo1_has_no_gains(tmp_path: Path) -> None:
    save_file({"model.embed_tokens.weight": torch.randn(8, 4),
               "model.layers.0.mlp.up_proj.weight": torch.randn(4, 4)},
              tmp_path / "model.safetensors")
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "olmo", "hidden_size": 4}))
    rep = audit_checkpoint(str(tmp_path))
    assert rep.convention is Convention.NONE and rep.verdict == "pass"
    assert [f.code for f in rep.findings] == ["no-gains"]


def test_stats_match_numpy_reference() -> None:
    from ckpt_audit.core.stats import gain_stats

    rng = np.random.default_rng(3)
    for n in (1, 7, 64, 7168):
        v = rng.standard_normal(n).astype(np.float32)
        s = gain_stats(v, Convention.DIRECT)
        ref = v.astype(np.float64)
        assert s.norm == pytest.approx(math.sqrt(float(np.sum(ref * ref))), rel=1e-15)
        assert s.mean == pytest.approx(float(ref.mean()), rel=1e-12, abs=1e-15)
        assert s.std == pytest.approx(float(ref.std()), rel=1e-12)
        assert (s.min, s.max) == (float(ref.min()), float(ref.max()))
        far = int(np.argmax(np.abs(ref - 1)))
        assert s.extreme[0] == (far, float(ref[far]))
    v = np.array([1.0, np.nan, np.inf, 0.001], dtype=np.float32)
    s = gain_stats(v, Convention.DIRECT, near_zero=0.01)
    assert s.nonfinite == 2 and math.isnan(s.norm) and s.near_zero == 0.25


@pytest.mark.parametrize("name", ["head.decoder_norms.0.weight", "blocks.0.norms.1.weight",
                                  "model.layers.3.norms.12.weight", "ln.0.weight"])
def test_gains_inside_module_lists(name: str) -> None:
    assert classify_name(name) == "gain"
    assert classify_name(name.replace(".weight", ".bias")) == "bias"
    assert classify_name("blocks.0.linears.1.weight") is None


def test_module_list_layer_and_last_output_norm() -> None:
    from ckpt_audit.core.discovery import discover
    from ckpt_audit.records import TensorInfo

    names = ["blocks.0.norms.0.weight", "blocks.0.norms.1.weight", "blocks.1.norms.0.weight",
             "head.decoder_norms.0.weight", "head.decoder_norms.1.weight"]
    d = discover({n: TensorInfo(n, (8,), "F32", "x") for n in names}, {})
    roles = {c.name: (c.role.value, c.layer) for c in d.gains}
    assert roles["blocks.0.norms.1.weight"] == ("layer", 0)
    assert roles["blocks.1.norms.0.weight"] == ("layer", 1)
    assert roles["head.decoder_norms.1.weight"] == ("final", None)
    assert roles["head.decoder_norms.0.weight"] == ("other", None)


def test_names_holding_newlines_are_judged_whole(tmp_path: Path) -> None:
    """Discovery scans all names joined by newlines; a key holding a newline (any string is a
    valid safetensors key) must neither vanish nor make a fake line that looks like a norm or
    an MTP layer."""
    save_file({"model.norm.weight": torch.full((8,), 0.9),
               "x\nmodel.layers.7.enorm.weight": torch.ones(8),
               "y\nmodel.layers.8.hnorm.weight.bias": torch.ones(8),
               "model.layers.0.input_layernorm.weight": torch.ones(8)},
              str(tmp_path / "model.safetensors"))
    rep = audit_checkpoint(str(tmp_path))
    names = {r.name for r in rep.norms}
    assert "x\nmodel.layers.7.enorm.weight" in names
    assert not any(n.startswith("model.layers.7") or n.startswith("model.layers.8") for n in names)
    assert rep.final is not None and rep.final.name == "model.norm.weight"
    assert rep.extra.get("mtp_layout") is None and "mtp" not in {r.role.value for r in rep.norms}


def test_every_mtp_marker_is_a_norm_so_the_normish_lines_hold_it() -> None:
    """detect_mtp_layout looks for each layout's marker among the norm-ish names only: a layout
    whose marker were not a norm would never be detected from its tensors."""
    from ckpt_audit.core.discovery import _normish, detect_mtp_layout
    from ckpt_audit.core.layouts import MTP_LAYOUTS

    for layout in MTP_LAYOUTS:
        name = layout.prefix.format(k=0, layer=3) + layout.required[0]
        names = sorted(["model.embed_tokens.weight", name])
        joined = "\n".join(names) + "\n"
        assert name in _normish(names, joined), layout.name
        assert detect_mtp_layout(names, {}, joined, _normish(names, joined)) is layout
        assert detect_mtp_layout(names, {}) is layout


def test_one_find_rules_out_every_mtp_module_prefix() -> None:
    """check_mtp skips the MTP module prefixes when their common core is nowhere in the names:
    the table must keep that core in every prefix."""
    from ckpt_audit.core.discovery import MTP_PREFIX_CORE
    from ckpt_audit.core.layouts import MTP_PREFIXES

    assert all(MTP_PREFIX_CORE in p for p in MTP_PREFIXES)


@pytest.mark.parametrize("many", [False, True])
def test_prefix_search_agrees_with_a_plain_scan(many: bool) -> None:
    """_has_prefix, by literal finds (a few prefixes) or a binary search (many), says what a
    plain startswith over every name says, names holding a newline included."""
    from ckpt_audit.core.discovery import _has_prefix, _join

    rng = np.random.default_rng(3)
    parts = ["model", "layers", "mtp", "blk", "0", "61", "7", "x\ny", "enorm", "weight", "."]
    names = sorted({".".join(rng.choice(parts, int(rng.integers(1, 5)))) for _ in range(300)})
    heads = ["model.layers.61.", "layers.7.", "blk.0.", "mtp.", "x\ny.", "y.", "nothing."]
    joined, odd, _ = _join(list(reversed(names)))
    assert odd, "the case of a name holding a newline is in the sample"
    for k in range(len(heads)):
        prefixes = heads[k:k + 1] * (12 if many else 1)
        want = any(n.startswith(p) for n in names for p in prefixes)
        assert _has_prefix(list(reversed(names)), joined, odd, prefixes) is want, prefixes
