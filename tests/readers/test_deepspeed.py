"""DeepSpeed engine checkpoints written by DeepSpeed 0.19.8 itself (CPU accelerator, gloo).

tests/data/deepspeed/ comes from make_deepspeed_fixtures.py: the same tiny Llama-named model
saved by ``engine.save_checkpoint`` at ZeRO stages 0, 2 and 3, and as reference.safetensors.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from ckpt_audit.errors import CkptAuditError
from ckpt_audit.readers import open_checkpoint
from tests.conftest import run_cli

DATA = Path(__file__).resolve().parents[1] / "data" / "deepspeed"


@pytest.fixture(scope="module")
def reference() -> dict[str, np.ndarray]:
    from safetensors.torch import load_file

    return {k: v.float().numpy() for k, v in
            load_file(str(DATA / "reference.safetensors")).items()}


@pytest.mark.parametrize("stage", ["zero0", "zero2", "zero2/global_step5"])
def test_module_matches_reference(stage: str, reference: dict[str, np.ndarray]) -> None:
    with open_checkpoint(str(DATA / stage)) as r:
        assert r.format == "deepspeed"
        infos = r.tensors()
        assert set(infos) == set(reference)  # optimizer state is not listed
        for name in infos:
            np.testing.assert_array_equal(r.read(name), reference[name])


@pytest.mark.parametrize("stage", ["zero0", "zero2"])
def test_cli_json_matches_safetensors(stage: str, tmp_path: Path) -> None:
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    assert run_cli(["audit", str(DATA / stage), "-f", "json", "-o", str(a)]).code in (0, 1)
    assert run_cli(["audit", str(DATA / "reference.safetensors"), "-f", "json", "-o",
                    str(b)]).code in (0, 1)
    got, want = json.loads(a.read_text()), json.loads(b.read_text())
    assert got["format"] == "deepspeed"
    assert got["norms"] == want["norms"] and len(got["norms"]) == 5
    assert {n["name"] for n in got["norms"] if n["role"] == "final"} == {"model.norm.weight"}


def test_zero3_is_refused_with_what_to_run() -> None:
    with pytest.raises(CkptAuditError) as exc:
        open_checkpoint(str(DATA / "zero3")).tensors()
    msg = str(exc.value)
    assert "ZeRO-3" in msg and "optimizer partitions" in msg
    assert "zero_to_fp32.py" in msg and "ckpt-audit audit OUT_DIR" in msg
    res = run_cli(["audit", str(DATA / "zero3")])
    assert res.code == 2
    assert len(res.err.strip().splitlines()) == 1 and "ZeRO-3" in res.err


def test_zero3_message_points_at_the_script_when_present(tmp_path: Path) -> None:
    root = tmp_path / "run"
    shutil.copytree(DATA / "zero3", root)
    (root / "zero_to_fp32.py").write_text("# stand-in for DeepSpeed's script\n")
    res = run_cli(["audit", str(root)])
    assert res.code == 2 and f"found at {root}/zero_to_fp32.py" in res.err


def test_latest_points_to_missing_tag(tmp_path: Path) -> None:
    root = tmp_path / "run"
    shutil.copytree(DATA / "zero0", root)
    (root / "latest").write_text("global_step99")
    res = run_cli(["audit", str(root)])
    assert res.code == 2
    assert "latest" in res.err and "global_step99" in res.err


def test_truncated_model_states(tmp_path: Path) -> None:
    root = tmp_path / "run"
    shutil.copytree(DATA / "zero2", root)
    f = root / "global_step5" / "mp_rank_00_model_states.pt"
    f.write_bytes(f.read_bytes()[:3000])
    res = run_cli(["audit", str(root)])
    assert res.code == 2 and "mp_rank_00_model_states.pt" in res.err


def test_consolidated_weights_win_over_engine_states(tmp_path: Path) -> None:
    """HF Trainer folders hold both; the consolidated file is read unless told otherwise."""
    root = tmp_path / "checkpoint-5"
    shutil.copytree(DATA / "zero0", root)
    shutil.copy(DATA / "reference.safetensors", root / "model.safetensors")
    with open_checkpoint(str(root)) as r:
        assert r.format == "safetensors"
    with open_checkpoint(str(root), format_hint="deepspeed") as r:
        assert r.format == "deepspeed"
        assert "model.norm.weight" in r.tensors()
