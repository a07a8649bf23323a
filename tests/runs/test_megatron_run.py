"""``trend`` over a Megatron-shaped run whose checkpoints megatron-core itself wrote.

The run mixes the two layouts a Megatron job can leave behind (legacy ``mp_rank_*`` at one
iteration, ``torch_dist`` at the next); both are the same weights, so the final ratio must equal
the one computed from the reference safetensors with numpy, at both steps.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np

from tests.support.cli import run_cli

DATA = Path(__file__).resolve().parents[1] / "data" / "megatron"


def test_trend_over_a_megatron_run(tmp_path: Path) -> None:
    from safetensors.torch import load_file

    run = tmp_path / "run"
    shutil.copytree(DATA / "legacy_tp1" / "iter_0000010", run / "iter_0000010")
    shutil.copytree(DATA / "torch_dist" / "iter_0000010", run / "iter_0000020")
    (run / "latest_checkpointed_iteration.txt").write_text("20")
    res = run_cli(["trend", str(run), "--format", "json"])
    doc = json.loads(res.out)
    assert [c["step"] for c in doc["checkpoints"]] == [10, 20]
    assert all(c["complete"] and c["verdict"] in ("pass", "warn", "fail")
               for c in doc["checkpoints"])
    ref = load_file(str(DATA / "reference.safetensors"))
    g = ref["decoder.final_layernorm.weight"].double().numpy()
    expected = math.sqrt(float(np.sum(g * g))) / math.sqrt(g.size)
    for c in doc["checkpoints"]:
        assert abs(c["final_ratio"] - expected) < 1e-12
