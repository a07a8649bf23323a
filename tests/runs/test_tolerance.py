"""Tolerances are compared on the stored values' own precision: gains written exactly
``tolerance`` apart (in float32) are not flagged, a hair more is."""

from __future__ import annotations

import json

import numpy as np
from safetensors.numpy import save_file

from tests.support.cli import run_cli


def _ckpt(path, value: float) -> str:
    folder = path
    folder.mkdir()
    save_file({"model.norm.weight": np.full(64, value, dtype=np.float32),
               "model.layers.0.input_layernorm.weight": np.ones(64, dtype=np.float32)},
              str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps({"model_type": "llama", "hidden_size": 64}))
    return str(folder)


def test_diff_max_change_on_stored_precision(tmp_path):
    a = _ckpt(tmp_path / "a", 1.05)
    b = _ckpt(tmp_path / "b", 1.10)
    c = _ckpt(tmp_path / "c", 1.1002)
    stored = float(np.float32(1.10)) - float(np.float32(1.05))
    assert stored > 0.05  # float32 storage makes the difference exceed 0.05 by ~7e-8
    assert run_cli(["diff", a, b, "--max-change", "0.05"]).code == 0
    res = run_cli(["diff", a, c, "--max-change", "0.05", "-f", "json"])
    assert res.code == 1
    assert [f["code"] for f in json.loads(res.out)["findings"]] == ["gain-changed"]
