"""The smaller hostile-input items: each a one-line exit 2 naming the input, or a clean report."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from tests.support.hostile import cli, one_line


def test_llama2c_group_size_error_names_the_file(tmp_path: Path) -> None:
    head = struct.pack("<Ii7iBi", 0x616B3432, 2, 8, 16, 1, 2, 2, 10, 4, 0, 3)
    path = tmp_path / "q80.bin"
    path.write_bytes(head.ljust(256, b"\0") + b"\0" * 4096)
    assert "q80.bin" in one_line(cli("audit", str(path)))


def test_huge_f64_gain_prints_no_numpy_warning(tmp_path: Path) -> None:
    ck = tmp_path / "ck"
    ck.mkdir()
    save_file({"model.norm.weight": np.full(8, 1e200), "lm_head.weight": np.ones((4, 8))},
              str(ck / "model.safetensors"))
    r = cli("audit", str(ck), "-f", "json")
    assert r.returncode in (0, 1) and "Warning" not in r.stderr, r.stderr


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two complete Trainer-style checkpoints written with the safetensors library."""
    import json

    root = tmp_path_factory.mktemp("hostile") / "run"
    for step in (0, 100):
        ck = root / f"checkpoint-{step}"
        ck.mkdir(parents=True)
        save_file({"model.norm.weight": np.ones(8, np.float32),
                   "model.layers.0.input_layernorm.weight": np.ones(8, np.float32)},
                  str(ck / "model.safetensors"))
        (ck / "config.json").write_text(json.dumps(
            {"hidden_size": 8, "num_hidden_layers": 1, "model_type": "llama"}))
        (ck / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    return root


def test_step_summary_inside_a_checkpoint_is_refused(run: Path) -> None:
    ck = sorted(p for p in run.iterdir() if p.is_dir())[0]
    summary = ck / "summary.md"
    env = {"GITHUB_ACTIONS": "true", "GITHUB_STEP_SUMMARY": str(summary)}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        r = cli("trend", str(run))
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    assert r.returncode == 2 and "refusing to write" in r.stderr, r.stderr
    assert not summary.exists()


def test_diff_output_inside_the_run_folder_is_refused(run: Path) -> None:
    a, b = sorted(str(p) for p in run.iterdir() if p.is_dir())[:2]
    out = run / "diff.json"
    assert "refusing to write" in one_line(cli("diff", a, b, "-f", "json", "-o", str(out)))
    assert not out.exists()


@pytest.mark.parametrize("args", [
    ["trend", "RUN", "--jump", "nan"],
    ["trend", "RUN", "--roles", "bogus"],
    ["compare", "RUN", "RUN", "--tolerance", "nan"],
    ["accept", "CK", "--probe", "probe.txt", "--final-scale", "nan"],
    ["accept", "CK", "--probe", "probe.txt", "--mtp-lambda", "nan"],
    ["diff", "CK", "CK", "--max-change", "inf"],
])
def test_nan_and_unknown_option_values_are_refused(tmp_path: Path, args: list[str]) -> None:
    (tmp_path / "run" / "checkpoint-1").mkdir(parents=True)
    subst = {"RUN": str(tmp_path / "run"), "CK": str(tmp_path / "run" / "checkpoint-1")}
    err = one_line(cli(*[subst.get(a, a) for a in args]))
    assert args[-2] in err  # the option is named (nan/inf refused, by us or by click's bound)


def test_demo_dir_on_a_file_and_ftp_urls_are_one_line(tmp_path: Path) -> None:
    f = tmp_path / "afile"
    f.write_text("x")
    one_line(cli("demo", "--dir", str(f)))
    assert "ftp://" in one_line(cli("audit", "ftp://example.invalid/ck"))
