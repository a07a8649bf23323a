"""Format detection never guesses: forced formats, unknown folders, ambiguous folders."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from ckpt_audit.errors import DetectionError
from ckpt_audit.readers import open_checkpoint
from ckpt_audit.readers.registry import LOOKED_FOR, available_formats
from tests.support.cli import run_cli

DATA = Path(__file__).resolve().parents[1] / "data"


def test_new_formats_are_registered() -> None:
    fmts = available_formats()
    for name in ("megatron-legacy", "megatron-torch_dist", "dcp", "deepspeed"):
        assert name in fmts
    # specific layouts are tried before the generic ones
    assert fmts.index("megatron-torch_dist") < fmts.index("dcp")


def test_unknown_folder_says_what_it_looked_for(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hello")
    res = run_cli(["audit", str(tmp_path)])
    assert res.code == 2
    line = res.err.strip()
    assert len(line.splitlines()) == 1
    for what in ("latest_checkpointed_iteration.txt", ".metadata", "global_stepN", "--format-hint"):
        assert what in line
    assert all(entry in line for entry in LOOKED_FOR)


def test_empty_iteration_folder_is_not_guessed(tmp_path: Path) -> None:
    (tmp_path / "iter_0000010").mkdir()
    (tmp_path / "latest_checkpointed_iteration.txt").write_text("10")
    with pytest.raises(DetectionError):
        open_checkpoint(str(tmp_path))


def test_format_hint_forces_the_generic_dcp_reader() -> None:
    path = str(DATA / "megatron" / "torch_dist")
    with open_checkpoint(path, format_hint="dcp") as r:
        assert r.format == "dcp"
        assert "decoder.layers.3.mlp.linear_fc1.layer_norm_weight" in r.tensors()
    with open_checkpoint(path) as r:
        assert r.format == "megatron-torch_dist"


def test_two_unrelated_layouts_in_one_folder_is_an_error(tmp_path: Path) -> None:
    root = tmp_path / "mixed"
    shutil.copytree(DATA / "dcp" / "sharded2", root)
    shutil.copytree(DATA / "deepspeed" / "zero0" / "global_step5", root / "global_step5")
    (root / "latest").write_text("global_step5")
    res = run_cli(["audit", str(root)])
    assert res.code == 2
    assert "several formats" in res.err and "dcp" in res.err and "deepspeed" in res.err
    ok = run_cli(["audit", str(root), "--format-hint", "deepspeed", "-f", "json"])
    assert ok.code in (0, 1) and '"format": "deepspeed"' in ok.out


def test_unknown_format_hint() -> None:
    res = run_cli(["audit", str(DATA / "dcp" / "sharded2"), "--format-hint", "megatron"])
    assert res.code == 2 and "megatron-legacy" in res.err
