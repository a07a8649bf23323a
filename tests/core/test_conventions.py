"""Storage conventions from configs, per-gain exceptions, and d_model resolution."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ckpt_audit.core.audit import audit_checkpoint, resolve_d_model
from ckpt_audit.core.conventions import convention_for, detect_convention, resolve_convention
from ckpt_audit.demo import write_safetensors
from ckpt_audit.records import Convention


@pytest.mark.parametrize("cfg,expected", [
    ({"model_type": "llama"}, Convention.DIRECT),
    ({"model_type": "gemma2"}, Convention.OFFSET),
    ({"model_type": "gemma3", "text_config": {"model_type": "gemma3_text"}}, Convention.OFFSET),
    ({"model_type": "gemma3n"}, Convention.DIRECT),
    ({"model_type": "qwen3_next"}, Convention.OFFSET),
    ({"model_type": "nemotron"}, Convention.OFFSET),
    ({"apply_layernorm_1p": True}, Convention.OFFSET),
    ({"layernorm_zero_centered_gamma": True}, Convention.OFFSET),
    ({"model_type": "olmo"}, Convention.NONE),
    ({"model_type": "olmo2"}, Convention.DIRECT),
    ({}, Convention.DIRECT),
])
def test_detect_convention(cfg: dict, expected: Convention) -> None:
    assert detect_convention(cfg)[0] is expected


def test_override_and_format_hint_win() -> None:
    cfg = {"model_type": "gemma"}
    assert resolve_convention(cfg, Convention.DIRECT, None)[0] is Convention.DIRECT
    assert resolve_convention(cfg, None, Convention.DIRECT)[0] is Convention.DIRECT  # GGUF
    assert resolve_convention(cfg, None, None)[0] is Convention.OFFSET


def test_qwen3_next_linear_attn_norm_stays_direct(tmp_path: Path) -> None:
    cfg = {"model_type": "qwen3_next"}
    assert convention_for("model.layers.0.linear_attn.norm.weight", Convention.OFFSET, cfg,
                          False) is Convention.DIRECT
    assert convention_for("model.layers.0.input_layernorm.weight", Convention.OFFSET, cfg,
                          False) is Convention.OFFSET
    write_safetensors(str(tmp_path / "model.safetensors"), {
        "model.norm.weight": np.zeros(16, np.float32),
        "model.layers.0.linear_attn.norm.weight": np.ones(8, np.float32),
    })
    (tmp_path / "config.json").write_text(json.dumps({**cfg, "hidden_size": 16}))
    rep = audit_checkpoint(str(tmp_path), expect_init=True)
    assert {r.name: r.stats.ratio for r in rep.norms} == {
        "model.norm.weight": 1.0, "model.layers.0.linear_attn.norm.weight": 1.0}
    assert rep.verdict == "pass"


def test_d_model_resolution(tmp_path: Path) -> None:
    assert resolve_d_model(512, {"hidden_size": 64}, 64) == (512, "--d-model")
    assert resolve_d_model(None, {"n_embd": 96}, 64) == (96, "config n_embd")
    assert resolve_d_model(None, {"text_config": {"hidden_size": 32}}, 64)[0] == 32
    assert resolve_d_model(None, {}, 64) == (64, "final norm length")
    write_safetensors(str(tmp_path / "m.safetensors"),
                      {"model.norm.weight": np.ones(24, np.float32)})
    rep = audit_checkpoint(str(tmp_path / "m.safetensors"))
    assert (rep.d_model, rep.d_model_source) == (24, "final norm length")
    rep = audit_checkpoint(str(tmp_path / "m.safetensors"), d_model=32)
    assert rep.d_model == 32 and [f.code for f in rep.findings] == ["d-model-mismatch"]
