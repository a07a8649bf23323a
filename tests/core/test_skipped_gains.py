"""Nothing that looks like a gain disappears: quantized gains are dequantized when the scheme is
known, else a ``quantized-gain`` finding; every other norm-named tensor that is not audited is
listed as ``skipped`` with its reason, in every output format."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from tests.support.cli import run_cli


@pytest.fixture()
def ckpt(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    g = rng.uniform(0.5, 1.5, 32).astype(np.float32)
    scale = np.float32(np.abs(g).max() / 127)
    q = np.round(g / scale).astype(np.int8)
    fp8_vals = np.full(32, 0x38, np.uint8)  # E4M3 0x38 = 1.0
    path = tmp_path / "m.safetensors"
    save_file({
        "model.norm.weight.qweight": q, "model.norm.weight.scale": np.array([scale]),
        "model.layers.0.input_layernorm.weight": np.ones(32, np.float32),
        "model.layers.0.post_attention_layernorm.weight": np.ones(32, np.uint8),  # no scale
        "model.layers.1.input_layernorm.weight": np.ones(32, np.float32),
        "model.layers.1.batch_norm.running_mean": np.zeros(32, np.float32),
        "model.layers.1.post_attention_layernorm.weight.scale": np.ones(1, np.float32),
        "model.layers.2.input_layernorm.weight": np.ones((32, 2), np.float32),
    }, str(path))
    # FP8 with weight_scale_inv, written as raw bytes with the F8_E4M3 dtype
    hdr_path = tmp_path / "fp8.safetensors"
    header = {"model.norm.weight": {"dtype": "F8_E4M3", "shape": [32], "data_offsets": [0, 32]},
              "model.norm.weight_scale_inv": {"dtype": "F32", "shape": [1],
                                              "data_offsets": [32, 36]},
              "model.layers.0.input_layernorm.weight": {"dtype": "F32", "shape": [32],
                                                        "data_offsets": [36, 164]}}
    hb = json.dumps(header).encode()
    hdr_path.write_bytes(len(hb).to_bytes(8, "little") + hb + fp8_vals.tobytes()
                         + np.array([0.5], "<f4").tobytes() + np.ones(32, "<f4").tobytes())
    (tmp_path / "truth.json").write_text(json.dumps(
        {"final": float(np.sqrt(np.mean((q.astype(np.float64) * float(scale)) ** 2)))}))
    return path


def test_int8_gain_dequantized_and_rest_skipped(ckpt: Path) -> None:
    truth = json.loads((ckpt.parent / "truth.json").read_text())
    r = run_cli(["audit", str(ckpt), "--format", "json"])
    rep = json.loads(r.out)
    assert rep["final"] == "model.norm.weight"
    assert rep["final_ratio"] == pytest.approx(truth["final"], rel=1e-12)
    skipped = {t["name"]: t["reason"] for t in rep["skipped"]}
    assert set(skipped) == {"model.layers.0.post_attention_layernorm.weight",
                            "model.layers.1.batch_norm.running_mean",
                            "model.layers.1.post_attention_layernorm.weight.scale",
                            "model.layers.2.input_layernorm.weight"}
    assert "quantized" in skipped["model.layers.0.post_attention_layernorm.weight"]
    codes = {(f["code"], f["tensor"]) for f in rep["findings"]}
    assert ("quantized-gain", "model.layers.0.post_attention_layernorm.weight") in codes
    assert rep["verdict"] == "warn"


def test_skipped_in_every_format(ckpt: Path) -> None:
    name = "model.layers.1.batch_norm.running_mean"
    table = run_cli(["audit", str(ckpt), "--width", "200"]).out
    assert name in table and "skipped 4 norm-named" in table
    md = run_cli(["audit", str(ckpt), "--format", "markdown"]).out
    assert f"`{name}`" in md and "Skipped (named like a norm, not audited): 4" in md
    junit = ET.fromstring(run_cli(["audit", str(ckpt), "--format", "junit"]).out)
    skipped = [tc.get("name") for tc in junit.iter("testcase") if tc.find("skipped") is not None]
    assert name in skipped and junit.get("skipped") == "4"


def test_fp8_gain_with_scale_inv(ckpt: Path) -> None:
    r = run_cli(["audit", str(ckpt.parent / "fp8.safetensors"), "--format", "json"])
    rep = json.loads(r.out)
    norms = {n["name"]: n for n in rep["norms"]}
    assert norms["model.norm.weight"]["ratio"] == pytest.approx(0.5)  # 1.0 × 0.5, not 1.0
    assert norms["model.norm.weight"]["dtype"].startswith("F8_E4M3")


def test_gguf_block_quantized_gain_is_dequantized(tmp_path: Path) -> None:
    """A norm stored Q8_0 in a GGUF file: dequantized by the gguf package, never dropped; truth
    from gguf.quants.dequantize + numpy."""
    gguf = pytest.importorskip("gguf")
    q = gguf.GGMLQuantizationType.Q8_0
    g = np.linspace(0.2, 1.4, 64).astype(np.float32)
    packed = gguf.quants.quantize(g, q)
    truth = float(np.sqrt(np.mean(gguf.quants.dequantize(packed, q).astype(np.float64) ** 2)))
    path = tmp_path / "q.gguf"
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_embedding_length(64)
    w.add_tensor("blk.0.attn_norm.weight", np.ones(64, np.float32))
    w.add_tensor("output_norm.weight", packed, raw_dtype=q)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    rep = json.loads(run_cli(["audit", str(path), "--format", "json"]).out)
    assert rep["final"] == "output_norm.weight" and rep["skipped"] == []
    assert rep["final_ratio"] == pytest.approx(truth, rel=1e-6)
    assert {n["name"]: n["dtype"] for n in rep["norms"]}["output_norm.weight"] == "Q8_0"
