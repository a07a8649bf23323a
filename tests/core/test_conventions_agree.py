"""``audit`` and ``accept``'s loader decide a gain's convention the same way, for every model type
the tables know: checkpoints written with the real ``safetensors`` library, audited through the
CLI, and compared with the decision the accept loader makes (the one ``detect_convention``).

Truth for the figure itself: numpy's RMS of w (direct) or 1 + w (offset) on the written values.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from ckpt_audit.core import conventions
from ckpt_audit.core.layouts import ENCODER_MODEL_TYPES
from ckpt_audit.mtp import loader
from ckpt_audit.records import Convention
from tests.support.cli import run_cli

#: every model type a table names, plus common direct families
MODEL_TYPES = sorted(conventions.OFFSET_MODEL_TYPES | conventions.NONE_MODEL_TYPES
                     | ENCODER_MODEL_TYPES | set(loader.MODEL_TYPE_ALIASES)
                     | {t for types, _ in conventions.DIRECT_EXCEPTIONS for t in types}
                     | {"llama", "qwen2", "qwen3", "mistral", "deepseek_v3", "gpt2", "phi",
                        "olmo2", "gemma3n"})
CONFIGS = ([{"model_type": t, "hidden_size": 64} for t in MODEL_TYPES] + [
    {"model_type": "llama", "hidden_size": 64, "apply_layernorm_1p": True},
    {"model_type": "llama", "hidden_size": 64, "layernorm_zero_centered_gamma": True},
    {"model_type": "gemma3", "hidden_size": 64,
     "text_config": {"model_type": "gemma3_text", "hidden_size": 64}},
])


def test_accept_loader_uses_the_audits_function() -> None:
    assert loader.detect_convention is conventions.detect_convention


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: "-".join(
    str(v) for k, v in sorted(c.items()) if k != "hidden_size" and not isinstance(v, dict)))
def test_audit_and_accept_agree(cfg: dict, tmp_path: Path) -> None:
    w = np.linspace(-0.4, 0.6, 64, dtype=np.float32)
    save_file({"model.norm.weight": w, "model.layers.0.input_layernorm.weight": w + 0.1},
              str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    res = run_cli(["audit", str(tmp_path), "-f", "json"])
    assert res.code in (0, 1), res.err
    final = {n["name"]: n for n in json.loads(res.out)["norms"]}["model.norm.weight"]
    accept_offset = loader.detect_convention(cfg)[0] is Convention.OFFSET
    assert (final["convention"] == "offset") == accept_offset
    g = w.astype(np.float64) + (1.0 if accept_offset else 0.0)
    assert final["ratio"] == pytest.approx(float(np.sqrt(np.mean(g * g))), rel=1e-12)
