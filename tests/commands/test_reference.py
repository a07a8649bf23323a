"""``--reference``: ratios to a base checkpoint's same-named gains instead of √n. Real weights
(stories260K), twins written with safetensors, truth from numpy."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from tests.support.cli import run_cli
from tests.support.trainers import rms, stories


@pytest.fixture(scope="module")
def s(stories_path: Path):
    return stories(stories_path)


def _hf(s, final_scale: float = 1.0, layer_scale: dict[int, float] | None = None,
        extra: bool = False) -> dict[str, np.ndarray]:
    """stories260K's gains under the HF Llama names the llama2.c reader gives them."""
    layer_scale = layer_scale or {}
    out = {"model.norm.weight": s.final * np.float32(final_scale)}
    for i in range(s.n_layers):
        f = np.float32(layer_scale.get(i, 1.0))
        out[f"model.layers.{i}.input_layernorm.weight"] = s.att[i] * f
        out[f"model.layers.{i}.post_attention_layernorm.weight"] = s.ffn[i].copy()
    if extra:
        out["model.layers.0.self_attn.q_norm.weight"] = np.ones(8, np.float32)
    return out


def _json(*args: str) -> tuple[int, dict]:
    r = run_cli([*args, "--format", "json"])
    assert r.out, r.err
    return r.code, json.loads(r.out)


def test_self_reference_all_one_and_pass(stories_path: Path) -> None:
    code, rep = _json("audit", str(stories_path))
    assert code == 1 and rep["reference"] == {"kind": "init"}  # 1.902: out of the init band
    code, rep = _json("audit", str(stories_path), "--reference", str(stories_path))
    assert rep["reference"] == {"kind": "checkpoint", "path": str(stories_path)}
    assert code == 0 and rep["verdict"] == "pass"
    assert rep["norms"] and all(n["ratio"] == 1.0 for n in rep["norms"])
    assert all(n["reference_norm"] == n["norm"] for n in rep["norms"])


def test_twin_collapse_and_explosion(tmp_path: Path, s, stories_path: Path) -> None:
    twin = tmp_path / "twin.safetensors"
    save_file(_hf(s, final_scale=0.3, layer_scale={2: 3.0}), str(twin))
    code, rep = _json("audit", str(twin), "--reference", str(stories_path))
    norms = {n["name"]: n for n in rep["norms"]}
    final = norms["model.norm.weight"]
    assert final["ratio"] == pytest.approx(rms(s.final * np.float32(0.3)) / rms(s.final),
                                           rel=1e-12)
    assert final["status"] == "collapse" and final["severity"] == "fail"
    layer = norms["model.layers.2.input_layernorm.weight"]
    assert layer["ratio"] == pytest.approx(3.0, rel=1e-6) and layer["status"] == "explosion"
    assert norms["model.layers.1.input_layernorm.weight"]["ratio"] == 1.0
    assert code == 1 and rep["verdict"] == "fail"


def test_reference_missing_and_mismatch(tmp_path: Path, s, stories_path: Path) -> None:
    twin = tmp_path / "twin.safetensors"
    g = _hf(s, extra=True)
    g["model.layers.1.post_attention_layernorm.weight"] = np.ones(32, np.float32)
    save_file(g, str(twin))
    code, rep = _json("audit", str(twin), "--reference", str(stories_path))
    codes = {(f["code"], f["tensor"]) for f in rep["findings"]}
    assert ("reference-missing", "model.layers.0.self_attn.q_norm.weight") in codes
    assert ("reference-mismatch", "model.layers.1.post_attention_layernorm.weight") in codes
    assert code == 1


def test_init_reference_note_in_table_and_markdown(stories_path: Path) -> None:
    note = "the band assumes training from all-ones gains"
    for fmt in ("table", "markdown"):
        out = run_cli(["audit", str(stories_path), "--format", fmt, "--width", "200"]).out
        assert note in out and "--reference BASE" in out
        out = run_cli(["audit", str(stories_path), "--format", fmt, "--width", "200",
                       "--reference", str(stories_path)]).out
        assert note not in out and "reference " + str(stories_path) in out


def test_policy_reference_bands(tmp_path: Path, s, stories_path: Path) -> None:
    twin = tmp_path / "twin.safetensors"
    save_file(_hf(s, layer_scale={2: 3.0}), str(twin))
    pol = tmp_path / "p.toml"
    pol.write_text("[reference.bands]\ncollapse = 0.2\nlow = 0.3\nshrink = 0.5\n"
                   "nominal = 2.0\ngrowth = 4.0\n")
    code, rep = _json("audit", str(twin), "--reference", str(stories_path), "-c", str(pol))
    norms = {n["name"]: n for n in rep["norms"]}
    assert norms["model.layers.2.input_layernorm.weight"]["status"] == "growth"
    code, rep = _json("audit", str(twin), "-c", str(pol))  # init mode keeps the article's bands
    assert {n["name"]: n["status"] for n in rep["norms"]}["model.norm.weight"] == "explosion"


def test_trend_reference_first_and_diff(tmp_path: Path, s) -> None:
    run = tmp_path / "run"
    for step, (final, layer) in {0: (1.0, 1.0), 100: (0.9, 1.0), 200: (0.3, 3.0)}.items():
        ck = run / f"checkpoint-{step}"
        ck.mkdir(parents=True)
        save_file(_hf(s, final_scale=final, layer_scale={1: layer}),
                  str(ck / "model.safetensors"))
        (ck / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    code, doc = _json("trend", str(run), "--reference", "first")
    assert doc["gain_reference"]["kind"] == "checkpoint"
    assert doc["gain_reference"]["path"].endswith("checkpoint-0")
    finals = [c["final_ratio"] for c in doc["checkpoints"]]
    assert finals[0] == 1.0 and finals[1] == pytest.approx(0.9, rel=1e-6)
    assert finals[2] == pytest.approx(0.3, rel=1e-6) and code == 1
    code, doc = _json("trend", str(run))
    assert doc["gain_reference"] == {"kind": "init"}
    assert doc["checkpoints"][0]["final_ratio"] == pytest.approx(rms(s.final), rel=1e-12)
    code, doc = _json("diff", str(run / "checkpoint-0"), str(run / "checkpoint-200"),
                      "--reference", str(run / "checkpoint-0"))
    assert doc["reference"]["kind"] == "checkpoint"


def test_compare_reference_base_ratios_and_divergence(tmp_path: Path, s) -> None:
    """``compare --reference BASE``: both runs' ratios are to BASE's same-named gains (run b's
    final gain is base × 0.5 in float32, so exactly 0.5), and the divergence is found there."""
    for run, drift in (("a", 1.0), ("b", 0.5)):
        for step, scale in {0: 1.0, 100: drift}.items():
            ck = tmp_path / run / f"checkpoint-{step}"
            ck.mkdir(parents=True)
            save_file(_hf(s, final_scale=scale), str(ck / "model.safetensors"))
            (ck / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    base = tmp_path / "a" / "checkpoint-0"
    code, doc = _json("compare", str(tmp_path / "a"), str(tmp_path / "b"),
                      "--reference", str(base))
    assert doc["gain_reference"] == {"kind": "checkpoint", "path": str(base)}
    assert [r["step"] for r in doc["rows"]] == [0, 100]
    assert doc["rows"][0]["final_ratio"] == [1.0, 1.0]
    assert doc["rows"][1]["final_ratio"] == [1.0, pytest.approx(0.5, rel=1e-12)]
    (first,) = doc["first_divergence"]
    assert (first["step"], first["name"]) == (100, "model.norm.weight")
    assert first["difference"] == pytest.approx(-0.5, rel=1e-12)
    assert code == 1 and doc["verdict"] == "fail"
    code, doc = _json("compare", str(tmp_path / "a"), str(tmp_path / "b"))
    assert doc["gain_reference"] == {"kind": "init"}
    assert doc["rows"][1]["final_ratio"][1] == pytest.approx(0.5 * rms(s.final), rel=1e-6)
