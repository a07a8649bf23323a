"""The CLI end to end: formats, exit codes, the JSON contract, and bad inputs."""

from __future__ import annotations

import json
import math
import os
import struct
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from ckpt_audit.demo import write_demo_run
from tests.support.cli import run_cli, run_subprocess

NORM_KEYS = {"name", "role", "layer", "dim", "dtype", "convention", "norm", "ratio", "min", "max",
             "mean", "std", "nonfinite", "status", "severity"}


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return write_demo_run(str(tmp_path_factory.mktemp("demo")))


def test_json_contract_and_independent_figures(demo: dict[str, str]) -> None:
    res = run_cli(["audit", demo["mtp"], "--format", "json"])
    assert res.code == 0  # an MTP collapse warns: below the default --fail-on fail
    data = json.loads(res.out)
    assert data["schema"] == "ckpt-audit.audit/1"
    assert data["format"] == "safetensors" and data["d_model"] == 256
    assert data["verdict"] == "warn"
    assert {f["code"] for f in data["findings"]} >= {"collapse"}
    raw = load_file(os.path.join(demo["mtp"], "model.safetensors"))  # the official reader
    for n in data["norms"]:
        assert NORM_KEYS <= set(n)
        g = raw[n["name"]].astype(np.float64)
        assert n["norm"] == pytest.approx(float(np.linalg.norm(g)), rel=1e-14)
        assert n["ratio"] == pytest.approx(float(np.linalg.norm(g)) / math.sqrt(g.size), rel=1e-14)
        assert n["dim"] == g.size and n["mean"] == pytest.approx(float(g.mean()), rel=1e-12)
    for f in data["findings"]:
        assert set(f) >= {"severity", "code", "tensor", "message"}


def test_exit_codes_follow_fail_on(demo: dict[str, str]) -> None:
    assert run_cli(["audit", demo["step 0"]]).code == 0
    assert run_cli(["audit", demo["step 1000"]]).code == 0
    assert run_cli(["audit", demo["step 2000"]]).code == 1
    assert run_cli(["audit", demo["step 3000"]]).code == 1
    mtp_fail = run_cli(["audit", demo["mtp"], "--fail-on", "fail", "-f", "json"])
    mtp_warn = run_cli(["audit", demo["mtp"], "--fail-on", "warn", "-f", "json"])
    assert (mtp_fail.code, mtp_warn.code) == (0, 1)


def test_expect_init(demo: dict[str, str]) -> None:
    assert run_cli(["audit", demo["step 0"], "--expect-init"]).code == 0
    res = run_cli(["audit", demo["step 1000"], "--expect-init", "-f", "json"])
    assert res.code == 1
    codes = [f["code"] for f in json.loads(res.out)["findings"]]
    assert codes.count("init-mismatch") == 9


def test_table_markdown_junit(demo: dict[str, str], tmp_path: Path) -> None:
    res = run_cli(["audit", demo["step 2000"], "--width", "100"])
    assert "model.norm.weight" in res.out and "collapse" in res.out and "FAIL" in res.out
    assert max(len(line) for line in res.out.splitlines()) <= 100
    md = tmp_path / "r.md"
    assert run_cli(["audit", demo["step 2000"], "-f", "markdown", "-o", str(md)]).code == 1
    text = md.read_text()
    assert "**FAIL**" in text and "| `model.norm.weight` | final |" in text
    xml = tmp_path / "r.xml"
    run_cli(["audit", demo["step 2000"], "-f", "junit", "-o", str(xml)])
    suite = ET.parse(xml).getroot()
    assert suite.get("tests") == "9" and suite.get("failures") == "1"
    failed = [c.get("name") for c in suite.iter("testcase") if c.find("failure") is not None]
    assert failed == ["model.norm.weight"]


def test_never_writes_into_the_checkpoint(demo: dict[str, str]) -> None:
    before = sorted(os.listdir(demo["step 0"]))
    res = run_cli(["audit", demo["step 0"], "-f", "json", "-o",
                   os.path.join(demo["step 0"], "report.json")])
    assert res.code == 2 and "never writes where checkpoints live" in res.err
    assert sorted(os.listdir(demo["step 0"])) == before


def test_bands_command() -> None:
    res = run_cli(["bands", "--d-model", "3072"])
    assert res.code == 0 and "55.4" in res.out and "22.2 – 99.8" in res.out
    data = json.loads(run_cli(["bands", "--d-model", "64", "-f", "json"]).out)
    assert data["schema"] == "ckpt-audit.bands/1" and data["init_norm"] == 8.0
    assert data["bands"]["nominal"] == [0.9 * 8, 1.12 * 8]


def test_demo_command_keeps_its_folder_and_its_try_lines_work(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import shlex

    monkeypatch.chdir(tmp_path)
    res = run_cli(["demo", "--width", "120"])
    assert res.code == 0, res.err
    for word in ("collapse", "explosion", "shrink", "nominal", "hnorm"):
        assert word in res.out
    assert (tmp_path / "ckpt-audit-demo" / "run" / "checkpoint-2000").is_dir()
    assert "remove it with: rm -r ckpt-audit-demo" in res.out
    after = res.out.split("\nTry:\n", 1)[1].split("\n\n", 1)[0]
    tries = [ln.strip() for ln in after.splitlines()]
    assert all(t.startswith("ckpt-audit ") for t in tries)
    assert len(tries) >= 3
    for line in tries:  # pasted as printed
        argv = shlex.split(line)[1:]
        assert run_cli(argv).code in (0, 1), line
    assert run_cli(["demo"]).code == 0  # its own folder is rewritten
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "mine.txt").write_text("x")
    refused = run_cli(["demo", "--dir", str(tmp_path / "other")])
    assert refused.code == 2 and "not written by `ckpt-audit demo`" in refused.err


def _bad_inputs(tmp_path: Path) -> dict[str, str]:
    good = write_demo_run(str(tmp_path / "g"))["step 0"]
    blob = Path(good, "model.safetensors").read_bytes()
    out: dict[str, str] = {}
    for label, data in {
        "empty": b"", "truncated": blob[:-100],
        "nonjson": struct.pack("<Q", 4) + b"nope",
        "oversized": struct.pack("<Q", 10**9) + b"{}",
        "offsets": struct.pack("<Q", 64) + json.dumps(
            {"model.norm.weight": {"dtype": "F32", "shape": [1000],
                                   "data_offsets": [0, 4000]}}).encode().ljust(64) + b"\0" * 8,
    }.items():
        d = tmp_path / label
        d.mkdir()
        (d / "model.safetensors").write_bytes(data)
        out[label] = str(d / "model.safetensors")
    d = tmp_path / "missing-shard"
    d.mkdir()
    (d / "model.safetensors.index.json").write_text(
        json.dumps({"weight_map": {"a": "model-00001-of-00001.safetensors"}}))
    out["missing-shard"] = str(d)
    import torch

    from tests.readers.test_torch_reader import _Evil

    torch.save({"model.norm.weight": torch.ones(4), "x": _Evil(str(tmp_path / "pwned"))},
               tmp_path / "evil.pt")
    out["malicious-pickle"] = str(tmp_path / "evil.pt")
    d = tmp_path / "nothing"
    d.mkdir()
    (d / "README").write_text("no weights here")
    out["nothing"] = str(d)
    return out


def test_bad_inputs_one_line_exit_2_no_traceback(tmp_path: Path) -> None:
    for label, path in _bad_inputs(tmp_path).items():
        res = run_subprocess(["audit", path])
        assert res.code == 2, (label, res.err)
        lines = res.err.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in res.err, (label, res.err)
        assert lines[0].startswith("ckpt-audit: error: ") and Path(path).name in lines[0]
    assert not (tmp_path / "pwned").exists()


def test_debug_env_shows_traceback(tmp_path: Path) -> None:
    (tmp_path / "x.safetensors").write_bytes(b"")
    res = run_subprocess(["audit", str(tmp_path / "x.safetensors")],
                         env={"CKPT_AUDIT_DEBUG": "1"})
    assert res.code != 0 and "Traceback" in res.err


def test_safetensors_path_does_not_import_torch(demo: dict[str, str]) -> None:
    code = ("import sys; from ckpt_audit.cli import main\n"
            "try:\n    main(['audit', sys.argv[1], '-f', 'json'])\n"
            "except SystemExit: pass\n"
            "print('TORCH' if 'torch' in sys.modules else 'NOTORCH', file=sys.stderr)")
    import subprocess
    import sys

    p = subprocess.run([sys.executable, "-c", code, demo["step 0"]], capture_output=True,
                       text=True, cwd=Path(__file__).resolve().parents[2])
    assert p.stderr.strip().endswith("NOTORCH"), p.stderr


def test_audit_baseline_gate(demo: dict[str, str], tmp_path: Path) -> None:
    good = tmp_path / "good.json"
    assert run_cli(["audit", demo["step 1000"], "-f", "json", "-o", str(good)]).code == 0
    same = run_cli(["audit", demo["step 1000"], "--baseline", str(good), "-f", "json"])
    assert same.code == 0
    moved = run_cli(["audit", demo["step 0"], "--baseline", str(good), "-f", "json"])
    data = json.loads(moved.out)
    drift = [f for f in data["findings"] if f["tensor"] == "model.norm.weight"
             and f["severity"] == "fail"]
    assert moved.code == 1 and drift  # final ratio 1.0 vs 0.75: beyond the allowed drift
