"""Hostile torch pickles: isolation between files, budgets, allowlist (exit 2, never exit 3).

Truth comes from numpy (the bytes we wrote), never from the tool's readers.
"""

from __future__ import annotations

import struct
import time
from pathlib import Path

import numpy as np
import pytest

from ckpt_audit.errors import CkptAuditError
from ckpt_audit.readers.registry import open_checkpoint
from tests.support.hostile import G, X, cli, state_dict, tensor, torch_zip

GAIN = np.linspace(0.5, 1.5, 4).astype(np.float32)


def _clean(path: Path) -> Path:
    return torch_zip(path, state_dict({"model.norm.weight": tensor((4,), (1,))}),
                     {"0": GAIN.tobytes()})


def _read(path: Path) -> np.ndarray:
    with open_checkpoint(str(path)) as r:
        return r.read("model.norm.weight")



def test_build_on_an_allowlisted_global_does_not_outlive_its_file(tmp_path: Path) -> None:
    # BUILD on the FloatStorage stand-in: before isolation, every later file of the process
    # decoded its F32 storages as F16 (trend: 1.000 read as 1.326 after a crafted neighbour)
    attack = (G("torch", "FloatStorage") + b"}" + X("dtype") + X("F16") + b"sb0"
              + G("argparse", "Namespace") + b"}" + X("__init__") + X("x") + b"sb0")
    crafted = torch_zip(tmp_path / "crafted.pt", b"\x80\x02" + attack
                        + state_dict({"model.norm.weight": tensor((4,), (1,))})[2:],
                        {"0": GAIN.tobytes()})
    clean = _clean(tmp_path / "clean.pt")
    try:
        _read(crafted)
    except CkptAuditError:
        pass
    np.testing.assert_array_equal(_read(clean), GAIN)
    import argparse

    assert "__init__" not in argparse.Namespace.__dict__ or callable(argparse.Namespace.__init__)
    assert argparse.Namespace(a=1).a == 1


def test_memo_shared_dicts_cost_their_size_not_two_to_the_depth(tmp_path: Path) -> None:
    # d[k] = {"a": d[k-1], "b": d[k-1]} through the memo: 2^40 paths, 40 dicts
    body = b"}" + X("model.norm.weight") + tensor((4,), (1,)) + b"s" + b"q\x000"
    for i in range(1, 40):
        body += b"}" + X("a") + b"h" + bytes([i - 1]) + b"s" + X("b") + b"h" + bytes([i - 1]) \
            + b"s" + b"q" + bytes([i]) + b"0"
    pkl = b"\x80\x02}" + X("model") + body + b"h" + bytes([39]) + b"s."
    path = torch_zip(tmp_path / "memo.pt", pkl, {"0": GAIN.tobytes()})
    t0 = time.monotonic()
    r = cli("audit", str(path), "-f", "json", timeout=30)
    assert time.monotonic() - t0 < 30
    assert r.returncode in (0, 1, 2), r.stderr
    assert "internal error" not in r.stderr


def test_dicts_nested_5000_deep_are_a_budget_error(tmp_path: Path) -> None:
    n = 5000
    pkl = b"\x80\x02}" + (X("a") + b"}") * n + b"s" * n + b"."
    path = torch_zip(tmp_path / "deep.pt", pkl)
    r = cli("audit", str(path))
    assert r.returncode == 2, r.stderr
    assert "deep.pt" in r.stderr and "nesting" in r.stderr and r.stderr.count("\n") == 1


def test_stride_zero_view_costs_its_storage_and_is_refused(tmp_path: Path) -> None:
    path = torch_zip(tmp_path / "s0.pt", state_dict(
        {"model.norm.weight": tensor((1 << 28,), (0,), numel=1)}), {"0": GAIN[:1].tobytes()})
    t0 = time.monotonic()
    with pytest.raises(CkptAuditError, match="larger than its storage"):
        _read(path)
    assert time.monotonic() - t0 < 5


def test_stride_longer_than_shape_is_exit_2(tmp_path: Path) -> None:
    path = torch_zip(tmp_path / "st.pt", state_dict(
        {"model.norm.weight": tensor((4,), (1, 1))}), {"0": GAIN.tobytes()})
    r = cli("audit", str(path))
    assert r.returncode == 2 and "st.pt" in r.stderr and "stride" in r.stderr, r.stderr


def test_bytearray_allocation_is_refused(tmp_path: Path) -> None:
    pkl = b"\x80\x02}" + X("x") + G("builtins", "bytearray") + b"(" + b"I2147483648\n" \
        + b"tRs."
    path = torch_zip(tmp_path / "alloc.pt", pkl)
    r = cli("audit", str(path))
    assert r.returncode == 2 and "alloc.pt" in r.stderr and "budget" in r.stderr, r.stderr


@pytest.mark.parametrize("payload", [
    G("os", "system") + b"(" + X("touch {marker}") + b"tR",
    b"(" + X("touch {marker}") + b"ios\nsystem\n",  # INST
    G("builtins", "eval") + b"(" + X("open('{marker}','w')") + b"tR",
    b"\x80\x02" + X("os") + X("system") + b"\x93" + b"(" + X("touch {marker}") + b"tR",
    b"(" + G("os", "system") + X("touch {marker}") + b"o",  # OBJ
    b"\x82\x01",  # EXT1: no extension registry entry
    b"(" + X("storage") + G("os", "system") + X("0") + X("cpu") + b"I1\ntQ",  # persistent id
])
def test_malicious_pickles_never_run_anything(tmp_path: Path, payload: bytes) -> None:
    marker = tmp_path / "PWNED"
    body = payload.replace(b"{marker}", str(marker).encode())
    if body.startswith(b"\x80\x02"):
        body = body[2:]
    pkl = b"\x80\x02}" + X("x") + body + b"s."
    path = torch_zip(tmp_path / "evil.pt", pkl)
    r = cli("audit", str(path))
    assert r.returncode == 2, r.stderr
    assert "evil.pt" in r.stderr and r.stderr.count("\n") == 1
    assert not marker.exists()


def test_storage_id_with_a_negative_count_is_refused(tmp_path: Path) -> None:
    pkl = state_dict({"model.norm.weight": tensor((4,), (1,), numel=-5)})
    path = torch_zip(tmp_path / "neg.pt", pkl, {"0": GAIN.tobytes()})
    r = cli("audit", str(path))
    assert r.returncode == 2 and "neg.pt" in r.stderr, r.stderr


def test_struct_helpers_match_torch_layout(tmp_path: Path) -> None:
    # the hand-assembled tensor pickle reads back as torch would read it (guards the crafts)
    import torch

    path = _clean(tmp_path / "c.pt")
    sd = torch.load(path, weights_only=True)
    np.testing.assert_array_equal(sd["model.norm.weight"].numpy(), GAIN)
    np.testing.assert_array_equal(_read(path), GAIN)
    assert struct.calcsize("<I") == 4
