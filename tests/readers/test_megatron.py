"""Megatron legacy and torch_dist checkpoints written by megatron-core 0.16.1 itself.

The fixtures under tests/data/megatron/ come from make_megatron_fixtures.py (a real GPTModel with
MTP, saved with torch.save in Megatron-LM's legacy layout and with dist_checkpointing.save); the
same weights are in reference.safetensors, read here with the safetensors package as the
independent side of every comparison.
"""

from __future__ import annotations

import json
import math
import shutil
from argparse import Namespace
from pathlib import Path

import numpy as np
import pytest

from ckpt_audit.core.audit import audit_reader
from ckpt_audit.errors import CkptAuditError, FormatError
from ckpt_audit.readers import open_checkpoint
from ckpt_audit.records import Convention, Severity
from tests.support.cli import run_cli

DATA = Path(__file__).resolve().parents[1] / "data" / "megatron"
REFERENCE = DATA / "reference.safetensors"

LAYOUTS = {
    "legacy_tp1": "megatron-legacy",
    "legacy_tp1/iter_0000010": "megatron-legacy",
    "legacy_tp2_te": "megatron-legacy",
    "legacy_pp2_vp2": "megatron-legacy",
    "torch_dist": "megatron-torch_dist",
    "torch_dist/iter_0000010": "megatron-torch_dist",
}


def te_to_local(name: str) -> str:
    """Transformer Engine's fused-norm names -> the local spec's names of the same gains."""
    return (name.replace("self_attention.linear_qkv.layer_norm_weight", "input_layernorm.weight")
            .replace("mlp.linear_fc1.layer_norm_weight", "pre_mlp_layernorm.weight"))


@pytest.fixture(scope="module")
def reference() -> dict[str, np.ndarray]:
    from safetensors.torch import load_file

    return {k: v.float().numpy() for k, v in load_file(str(REFERENCE)).items()}


def _gain_names(names: list[str]) -> list[str]:
    return [n for n in names if "norm" in n]


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_layout_lists_and_reads_the_reference_weights(layout: str,
                                                      reference: dict[str, np.ndarray]) -> None:
    with open_checkpoint(str(DATA / layout)) as r:
        assert r.format == LAYOUTS[layout]
        infos = r.tensors()
        assert {te_to_local(n) for n in infos} == set(reference)
        for name, info in infos.items():
            assert info.shape == reference[te_to_local(name)].shape, name
        gains = _gain_names(list(infos))
        assert len(gains) == 14  # 4 layers x 2, final, MTP enorm/hnorm/final + 2 inner
        values = r.read_many(gains)
        for name in gains:
            np.testing.assert_array_equal(values[name], reference[te_to_local(name)])
        cfg = r.config()
        assert cfg["hidden_size"] == 64 and cfg["mtp_num_layers"] == 1
        assert cfg["apply_layernorm_1p"] is False
        assert r.convention_hint is None
        assert not [f for f in r.findings if f.code == "tp-mismatch"]


def test_tensor_parallel_shards_are_concatenated(reference: dict[str, np.ndarray]) -> None:
    """Column- and row-parallel weights come back whole, equal to the TP=1 weights."""
    with open_checkpoint(str(DATA / "legacy_tp2_te")) as r:
        for name in ("embedding.word_embeddings.weight", "output_layer.weight",
                     "decoder.layers.1.self_attention.linear_qkv.weight",
                     "decoder.layers.1.self_attention.linear_proj.weight",
                     "decoder.layers.3.mlp.linear_fc2.weight", "mtp.layers.0.eh_proj.weight"):
            np.testing.assert_array_equal(r.read(name), reference[name])
        assert r.config()["megatron_tensor_parallel"] == 2


def test_virtual_pipeline_gets_global_layer_numbers(reference: dict[str, np.ndarray]) -> None:
    """mp_rank_00_000 holds global layers 0 and 2 (model0, model1), mp_rank_00_001 1 and 3."""
    with open_checkpoint(str(DATA / "legacy_pp2_vp2")) as r:
        cfg = r.config()
        assert (cfg["megatron_pipeline_parallel"], cfg["megatron_virtual_pipeline"]) == (2, 2)
        src = {n: Path(i.source).parent.name for n, i in r.tensors().items()}
        assert src["decoder.layers.0.input_layernorm.weight"] == "mp_rank_00_000"
        assert src["decoder.layers.1.input_layernorm.weight"] == "mp_rank_00_001"
        assert src["decoder.layers.2.input_layernorm.weight"] == "mp_rank_00_000"
        assert src["decoder.layers.3.input_layernorm.weight"] == "mp_rank_00_001"
        assert src["decoder.final_layernorm.weight"] == "mp_rank_00_001"
        for i in range(4):
            name = f"decoder.layers.{i}.pre_mlp_layernorm.weight"
            np.testing.assert_array_equal(r.read(name), reference[name])


def _norms(doc: dict) -> dict[str, tuple[float, float, str]]:
    return {te_to_local(n["name"]): (n["norm"], n["ratio"], n["role"]) for n in doc["norms"]}


@pytest.mark.parametrize("layout", ["legacy_tp1", "legacy_tp2_te", "legacy_pp2_vp2",
                                    "torch_dist"])
def test_cli_json_matches_safetensors(layout: str, tmp_path: Path,
                                      reference: dict[str, np.ndarray]) -> None:
    out, ref_out = tmp_path / "a.json", tmp_path / "ref.json"
    res = run_cli(["audit", str(DATA / layout), "--format", "json", "--output", str(out)])
    assert res.code in (0, 1), res.err
    ref = run_cli(["audit", str(REFERENCE), "--format", "json", "--output", str(ref_out)])
    assert ref.code in (0, 1), ref.err
    doc, ref_doc = json.loads(out.read_text()), json.loads(ref_out.read_text())
    assert doc["format"] == LAYOUTS[layout] and doc["d_model"] == 64
    got, want = _norms(doc), _norms(ref_doc)
    assert set(got) == set(want) and len(got) == 14
    for name, (norm, ratio, role) in got.items():
        assert norm == pytest.approx(want[name][0], rel=1e-12)
        assert ratio == pytest.approx(want[name][1], rel=1e-12)
        assert role == want[name][2]
        # independent figure: float64 L2 norm of the reference gain
        vec = reference[name].astype(np.float64)
        assert norm == pytest.approx(float(np.sqrt((vec * vec).sum())), rel=1e-9)
        assert ratio == pytest.approx(norm / math.sqrt(vec.size), rel=1e-9)
    roles = {n["name"]: n["role"] for n in doc["norms"]}
    assert roles["decoder.final_layernorm.weight"] == "final"
    assert roles["mtp.layers.0.enorm.weight"] == "mtp"


def test_tp_replica_mismatch_is_a_failing_finding() -> None:
    with open_checkpoint(str(DATA / "legacy_tp2_mismatch")) as r:
        report = audit_reader(r)
    bad = [f for f in report.findings if f.code == "tp-mismatch"]
    assert len(bad) == 1
    f = bad[0]
    assert f.severity is Severity.FAIL
    assert f.tensor == "decoder.layers.2.pre_mlp_layernorm.weight"
    assert "mp_rank_00" in f.message and "mp_rank_01" in f.message
    assert "1 of 64 channels differ" in f.message
    assert report.verdict == "fail"
    # independent figure: the generator scaled channel 5 of rank 1's bf16 copy by 1.5
    torch = pytest.importorskip("torch")
    from safetensors.torch import load_file

    x = load_file(str(REFERENCE))["decoder.layers.2.pre_mlp_layernorm.weight"][5]
    want = abs(float((x * 1.5).float()) - float(x.float()))
    assert isinstance(x, torch.Tensor) and f"max |diff| = {want:.6g}" in f.message


def test_tp_replica_mismatch_through_the_cli(tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    res = run_cli(["audit", str(DATA / "legacy_tp2_mismatch"), "--format", "json",
                   "--output", str(out)])
    assert res.code == 1
    doc = json.loads(out.read_text())
    assert doc["verdict"] == "fail"
    codes = {(f["code"], f["severity"], f["tensor"]) for f in doc["findings"]}
    assert ("tp-mismatch", "fail", "decoder.layers.2.pre_mlp_layernorm.weight") in codes


# -- bad variants: exit 2 with one line naming the file ------------------------------------
def _copy(layout: str, tmp_path: Path) -> Path:
    dst = tmp_path / layout.replace("/", "_")
    shutil.copytree(DATA / layout, dst)
    return dst


def _expect_error(path: Path, *needles: str) -> str:
    res = run_cli(["audit", str(path)])
    assert res.code == 2, (res.out, res.err)
    lines = res.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ckpt-audit: error: "), res.err
    for n in needles:
        assert n in lines[0], lines[0]
    return lines[0]


def test_truncated_rank_file(tmp_path: Path) -> None:
    root = _copy("legacy_tp1", tmp_path)
    pt = root / "iter_0000010" / "mp_rank_00" / "model_optim_rng.pt"
    pt.write_bytes(pt.read_bytes()[: pt.stat().st_size // 2])
    _expect_error(root, "model_optim_rng.pt")


def test_missing_rank_folder(tmp_path: Path) -> None:
    root = _copy("legacy_tp2_te", tmp_path)
    shutil.rmtree(root / "iter_0000010" / "mp_rank_01")
    _expect_error(root, "missing rank folder mp_rank_01", "iter_0000010")


def test_missing_pipeline_stage(tmp_path: Path) -> None:
    root = _copy("legacy_pp2_vp2", tmp_path)
    shutil.rmtree(root / "iter_0000010" / "mp_rank_00_001")
    _expect_error(root, "missing rank folder mp_rank_00_001")


@pytest.mark.parametrize("layout", ["legacy_tp1", "torch_dist"])
def test_tracker_points_to_missing_iteration(layout: str, tmp_path: Path) -> None:
    root = _copy(layout, tmp_path)
    (root / "latest_checkpointed_iteration.txt").write_text("20\n")
    _expect_error(root, "latest_checkpointed_iteration.txt", "iter_0000020")


def test_tracker_with_garbage(tmp_path: Path) -> None:
    root = _copy("legacy_tp1", tmp_path)
    (root / "latest_checkpointed_iteration.txt").write_text("last-good\n")
    _expect_error(root, "not an iteration number")


def test_malicious_pickle_global_is_refused_not_run(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self) -> tuple:
            import os

            return (os.system, (f"touch {marker}",))

    root = _copy("legacy_tp1", tmp_path)
    pt = root / "iter_0000010" / "mp_rank_00" / "model_optim_rng.pt"
    torch.save({"args": Namespace(hidden_size=64), "iteration": 10,
                "model": {"decoder.final_layernorm.weight": torch.ones(64)}, "x": Evil()}, pt)
    line = _expect_error(root, "refused to unpickle", "system", "model_optim_rng.pt")
    assert "nothing was executed" in line
    assert not marker.exists()


def _rewrite_common(root: Path, obj: object) -> None:
    torch = pytest.importorskip("torch")
    torch.save(obj, root / "iter_0000010" / "common.pt")


def test_torch_dist_without_args_takes_d_model_from_final_norm(tmp_path: Path) -> None:
    root = _copy("torch_dist", tmp_path)
    _rewrite_common(root, {})
    with open_checkpoint(str(root)) as r:
        assert r.config() == {}
        report = audit_reader(r)
    assert report.d_model == 64 and "final" in report.d_model_source
    assert len(report.norms) == 14


def test_apply_layernorm_1p_means_offset_gains(tmp_path: Path,
                                               reference: dict[str, np.ndarray]) -> None:
    root = _copy("torch_dist", tmp_path)
    _rewrite_common(root, {"args": Namespace(hidden_size=64, num_layers=4, mtp_num_layers=1,
                                             apply_layernorm_1p=True), "iteration": 10})
    with open_checkpoint(str(root)) as r:
        assert r.config()["apply_layernorm_1p"] is True
        assert r.convention_hint is Convention.OFFSET
        report = audit_reader(r)
    assert report.convention is Convention.OFFSET
    final = report.final
    assert final is not None
    eff = 1.0 + reference["decoder.final_layernorm.weight"].astype(np.float64)
    assert final.stats.norm == pytest.approx(float(np.linalg.norm(eff)), rel=1e-9)


def test_torch_dist_reads_only_the_gain_chunks() -> None:
    root = DATA / "torch_dist" / "iter_0000010"
    total = sum(p.stat().st_size for p in root.iterdir())
    with open_checkpoint(str(root)) as r:
        r.read_many(_gain_names(list(r.tensors())))
        assert 0 < r.bytes_read < total / 5


def test_torch_dist_bad_variants(tmp_path: Path) -> None:
    root = _copy("torch_dist", tmp_path)
    it = root / "iter_0000010"
    (it / "__0_1.distcp").unlink()
    _expect_error(root, "missing file '__0_1.distcp'")
    shutil.rmtree(root)
    root = _copy("torch_dist", tmp_path)
    meta = root / "iter_0000010" / ".metadata"
    meta.write_bytes(meta.read_bytes()[:1000])
    _expect_error(root, ".metadata")


def test_errors_are_ckpt_audit_errors(tmp_path: Path) -> None:
    root = _copy("legacy_tp2_te", tmp_path)
    shutil.rmtree(root / "iter_0000010" / "mp_rank_00")
    with pytest.raises(CkptAuditError):
        open_checkpoint(str(root)).tensors()
    with pytest.raises(FormatError, match="mp_rank_00"):
        open_checkpoint(str(root)).tensors()


def test_single_rank_file(reference: dict[str, np.ndarray]) -> None:
    one = DATA / "legacy_tp1" / "iter_0000010" / "mp_rank_00" / "model_optim_rng.pt"
    with open_checkpoint(str(one)) as r:
        assert r.format == "megatron-legacy"
        assert r.config()["hidden_size"] == 64
        np.testing.assert_array_equal(r.read("decoder.layers.3.input_layernorm.weight"),
                                      reference["decoder.layers.3.input_layernorm.weight"])
        assert not r.findings
    stage = DATA / "legacy_pp2_vp2" / "iter_0000010" / "mp_rank_00_001" / "model_optim_rng.pt"
    with open_checkpoint(str(stage)) as r:
        r.tensors()
        assert [f.code for f in r.findings] == ["single-rank"]
        assert r.findings[0].severity is Severity.WARN
