"""Broken and hostile checkpoint folders: completeness before verdict, a closed world, only
regular files, budgets on JSON, escaped one-line errors. Every case: exit 2 naming the input."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from tests.support.hostile import cli, one_line

GAINS = {"model.norm.weight": np.ones(8, np.float32),
         "model.layers.0.input_layernorm.weight": np.ones(8, np.float32)}
CONFIG = {"hidden_size": 8, "num_hidden_layers": 1, "model_type": "llama"}




def sharded(folder: Path, n: int = 2, index: bool = True) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    names = list(GAINS)
    weight_map = {}
    for k in range(1, n + 1):
        shard = f"model-{k:05d}-of-{n:05d}.safetensors"
        part = {name: GAINS[name] for name in names[k - 1 :: n]}
        save_file(part, str(folder / shard))
        weight_map.update(dict.fromkeys(part, shard))
    if index:
        (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    (folder / "config.json").write_text(json.dumps(CONFIG))
    return folder


# -- completeness before verdict (the same rules as trend) -----------------------------------

def test_lone_second_shard_is_incomplete_in_audit_and_trend(tmp_path: Path) -> None:
    ck = sharded(tmp_path / "run" / "checkpoint-10", index=False)
    (ck / "model-00001-of-00002.safetensors").unlink()
    err = one_line(cli("audit", str(ck)))
    assert "incomplete" in err and "model-00001-of-00002.safetensors is missing" in err
    one_line(cli("audit", str(ck), "--incomplete", "fail"), code=1)
    one_line(cli("audit", str(ck / "model-00002-of-00002.safetensors")))
    from ckpt_audit.runs.discovery import discover_run

    (run,) = discover_run(str(tmp_path / "run")).checkpoints
    assert not run.complete and any("model-00001-of-00002" in p for p in run.problems)


def test_complete_sharded_folder_still_passes(tmp_path: Path) -> None:
    r = cli("audit", str(sharded(tmp_path / "ck")), "-f", "json")
    assert r.returncode == 0, r.stderr


def test_index_naming_an_absent_file_is_incomplete(tmp_path: Path) -> None:
    ck = sharded(tmp_path / "ck")
    idx = json.loads((ck / "model.safetensors.index.json").read_text())
    idx["weight_map"]["extra.weight"] = "model-00009-of-00009.safetensors"
    (ck / "model.safetensors.index.json").write_text(json.dumps(idx))
    assert "incomplete" in one_line(cli("audit", str(ck)))


# -- a closed world --------------------------------------------------------------------------

@pytest.mark.parametrize("target", ["../outside.safetensors", "ABS"])
def test_index_naming_a_file_outside_is_refused(tmp_path: Path, target: str) -> None:
    outside = tmp_path / "outside.safetensors"
    save_file(GAINS, str(outside))
    ck = tmp_path / "ck"
    ck.mkdir()
    name = str(outside) if target == "ABS" else target
    (ck / "model.safetensors.index.json").write_text(
        json.dumps({"weight_map": dict.fromkeys(GAINS, name)}))
    (ck / "config.json").write_text(json.dumps(CONFIG))
    from ckpt_audit.errors import FormatError
    from ckpt_audit.readers.safetensors_reader import SafetensorsReader
    from ckpt_audit.storage import location

    with pytest.raises(FormatError, match="inside the checkpoint folder") as exc:
        SafetensorsReader(location(str(ck)))
    assert exc.value.path and exc.value.path.endswith("model.safetensors.index.json")
    one_line(cli("audit", str(ck)))


def test_torch_index_naming_a_file_outside_is_refused(tmp_path: Path) -> None:
    import torch

    (tmp_path / "outside").mkdir()
    torch.save({k: torch.from_numpy(v) for k, v in GAINS.items()},
               tmp_path / "outside" / "x.bin")
    ck = tmp_path / "ck"
    ck.mkdir()
    (ck / "pytorch_model.bin.index.json").write_text(
        json.dumps({"weight_map": dict.fromkeys(GAINS, "../outside/x.bin")}))
    from ckpt_audit.errors import FormatError
    from ckpt_audit.readers.torch_reader import TorchReader
    from ckpt_audit.storage import location

    with pytest.raises(FormatError, match="inside the checkpoint folder"):
        TorchReader(location(str(ck)))


def test_symlinked_shard_resolving_outside_is_refused(tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere.safetensors"
    save_file(GAINS, str(outside))
    ck = tmp_path / "ck"
    ck.mkdir()
    (ck / "model.safetensors").symlink_to(outside)
    from ckpt_audit.errors import FormatError
    from ckpt_audit.readers.safetensors_reader import SafetensorsReader
    from ckpt_audit.storage import location

    with pytest.raises(FormatError, match="resolves outside"):
        SafetensorsReader(location(str(ck)))


def test_hf_cache_snapshot_links_into_blobs_are_inside(tmp_path: Path) -> None:
    repo = tmp_path / "models--org--tiny"
    (repo / "blobs").mkdir(parents=True)
    snap = repo / "snapshots" / "abc123"
    snap.mkdir(parents=True)
    save_file(GAINS, str(repo / "blobs" / "f00d"))
    (repo / "blobs" / "c0fe").write_text(json.dumps(CONFIG))
    (snap / "model.safetensors").symlink_to("../../blobs/f00d")
    (snap / "config.json").symlink_to("../../blobs/c0fe")
    r = cli("audit", str(snap), "-f", "json")
    assert r.returncode == 0, r.stderr


# -- only regular files ----------------------------------------------------------------------

@pytest.mark.parametrize("role", ["shard", "index", "config", "argument"])
def test_a_fifo_is_a_one_line_error_never_a_hang(tmp_path: Path, role: str) -> None:
    ck = sharded(tmp_path / "ck")
    target = {"shard": ck / "model-00001-of-00002.safetensors",
              "index": ck / "model.safetensors.index.json",
              "config": ck / "config.json", "argument": tmp_path / "fifo"}[role]
    if target.exists():
        target.unlink()
    os.mkfifo(target)
    arg = str(target) if role == "argument" else str(ck)
    err = one_line(cli("audit", arg, timeout=30))
    assert target.name in err and ("FIFO" in err or "incomplete" in err)


def test_a_folder_where_a_shard_should_be_is_a_one_line_error(tmp_path: Path) -> None:
    ck = sharded(tmp_path / "ck")
    (ck / "model-00001-of-00002.safetensors").unlink()
    (ck / "model-00001-of-00002.safetensors").mkdir()
    one_line(cli("audit", str(ck)))


# -- JSON budgets ----------------------------------------------------------------------------

@pytest.mark.parametrize("where", ["index", "config", "header"])
@pytest.mark.parametrize("bomb", ["deep", "digits"])
def test_json_bombs_are_exit_2(tmp_path: Path, where: str, bomb: str) -> None:
    text = "[" * 100_000 + "]" * 100_000 if bomb == "deep" else "1" * 5000
    ck = sharded(tmp_path / "ck")
    if where == "index":
        (ck / "model.safetensors.index.json").write_text(
            '{"metadata": ' + text + ', "weight_map": {}}')
    elif where == "config":
        (ck / "config.json").write_text('{"hidden_size": ' + text + "}")
    else:
        shard = ck / "model-00001-of-00002.safetensors"
        header = ('{"__metadata__": {"x": "y"}, "z": ' + text + "}").encode()
        shard.write_bytes(len(header).to_bytes(8, "little") + header)
    err = one_line(cli("audit", str(ck), timeout=30))
    assert "internal error" not in err


# -- escaped output --------------------------------------------------------------------------

def test_control_characters_in_a_path_stay_one_escaped_line(tmp_path: Path) -> None:
    bad = tmp_path / "evil\n\x1b[2K\rckpt-audit: PASS"
    bad.mkdir()
    r = cli("audit", str(bad))
    err = one_line(r)
    assert "\x1b" not in err and "\r" not in err and "\\x1b[2K\\rckpt-audit: PASS" in err


def test_escape_is_the_one_function() -> None:
    from ckpt_audit.errors import FormatError, error_text, escape

    assert escape("a\nb\x1b\u202e") == "a\\nb\\x1b\\u202e"
    assert escape("layers.0.ln.weight é") == "layers.0.ln.weight é"
    assert error_text(FormatError("x\ny", "p\r")) == "ckpt-audit: error: p\\r: x\\ny"


def test_tensor_names_with_controls_are_escaped_in_every_format(tmp_path: Path) -> None:
    ck = tmp_path / "ck"
    ck.mkdir()
    evil = "model.layers.1.input_layernorm\x1b[2K\r[bold]PASS|x.weight"
    save_file({"model.norm.weight": np.full(8, 0.01, np.float32),
               "model.layers.0.input_layernorm.weight": np.ones(8, np.float32),
               evil: np.full(8, 50.0, np.float32)}, str(ck / "model.safetensors"))
    (ck / "config.json").write_text(json.dumps({**CONFIG, "num_hidden_layers": 2}))
    for fmt in ("table", "markdown", "junit"):
        r = cli("audit", str(ck), "-f", fmt, "--width", "200")
        assert "\x1b" not in r.stdout and "\r" not in r.stdout, (fmt, r.stdout)
        assert "input_layernorm\\x1b[2K\\r[bold]PASS" in r.stdout, (fmt, r.stdout)
    import xml.etree.ElementTree as ET

    ET.fromstring(cli("audit", str(ck), "-f", "junit").stdout)  # still valid XML
