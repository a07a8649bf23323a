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
from tests.support.cli import run_cli

DATA = Path(__file__).resolve().parents[1] / "data" / "deepspeed"
FROZEN = "model.layers.1.input_layernorm.weight"  # frozen in zero3_dp2


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


@pytest.mark.parametrize("stage", ["zero3", "zero3_dp2"])
def test_zero3_gains_come_from_the_optimizer_partitions(
        stage: str, reference: dict[str, np.ndarray]) -> None:
    """module holds empty placeholders; the fp32 partitions give the real values."""
    with open_checkpoint(str(DATA / stage)) as r:
        assert r.format == "deepspeed"
        infos = r.tensors()
        assert set(infos) == set(reference)
        assert all(i.dtype == "F32" for i in infos.values())
        for name in infos:  # zero3_dp2: every tensor is two partitions (one frozen: fragments)
            np.testing.assert_array_equal(r.read(name), reference[name])
        codes = [f.code for f in r.findings]
        assert codes == ["zero3-partitions"]
        world = 2 if stage == "zero3_dp2" else 1
        assert f"{world} data-parallel rank" in r.findings[0].message


def test_zero3_cli_matches_safetensors(tmp_path: Path) -> None:
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    assert run_cli(["audit", str(DATA / "zero3_dp2"), "-f", "json", "-o", str(a)]).code in (0, 1)
    assert run_cli(["audit", str(DATA / "reference.safetensors"), "-f", "json", "-o",
                    str(b)]).code in (0, 1)
    assert json.loads(a.read_text())["norms"] == json.loads(b.read_text())["norms"]


def test_zero3_reads_only_the_gain_ranges() -> None:
    """After the pickles are parsed, each gain costs its fp32 bytes (+ one zip local header)."""
    with open_checkpoint(str(DATA / "zero3_dp2")) as r:
        names = [n for n in r.tensors() if "norm" in n and n != FROZEN]
        r.read(names[0])  # parses both ranks' optimizer pickles
        before = r.bytes_read
        r.read_many(names[1:])
        gain_bytes = sum(4 * r.tensors()[n].numel for n in names[1:])
        assert gain_bytes <= r.bytes_read - before <= gain_bytes + 2 * 64


def test_zero3_without_partitions_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "run"
    shutil.copytree(DATA / "zero3", root)
    (root / "global_step5" / "zero_pp_rank_0_mp_rank_00_optim_states.pt").unlink()
    with pytest.raises(CkptAuditError) as exc:
        open_checkpoint(str(root)).tensors()
    assert "ZeRO-3" in str(exc.value) and "optim_states.pt partitions" in str(exc.value)
    res = run_cli(["audit", str(root)])
    assert res.code == 2 and len(res.err.strip().splitlines()) == 1


def test_zero3_missing_one_rank_partition(tmp_path: Path) -> None:
    root = tmp_path / "run"
    shutil.copytree(DATA / "zero3_dp2", root)
    (root / "global_step5" / "zero_pp_rank_1_mp_rank_00_optim_states.pt").unlink()
    res = run_cli(["audit", str(root)])
    assert res.code == 2
    assert "missing optimizer partition file of data-parallel rank 1" in res.err


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
