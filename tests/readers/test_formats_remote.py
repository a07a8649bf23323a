"""Megatron, DCP and DeepSpeed checkpoints read over HTTP (no listing) and S3 (listing).

A real HTTP server on 127.0.0.1 that honours Range and never lists folders (so every layout
must find its files by probing), and moto's S3-compatible server on 127.0.0.1 (so layouts are
found by listing). Each gives the figures of the same checkpoint read from local disk.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.cli import run_cli
from tests.support.range_server import RangeServer
from tests.support.s3 import moto_s3

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data"

LAYOUTS = [
    ("megatron/torch_dist/", "megatron-torch_dist"),
    ("megatron/legacy_tp2_te/", "megatron-legacy"),
    ("megatron/legacy_pp2_vp2/", "megatron-legacy"),
    ("megatron/legacy_tp2_mismatch/", "megatron-legacy"),
    ("dcp/sharded2/", "dcp"),
    ("deepspeed/zero2/", "deepspeed"),
    ("deepspeed/zero3_dp2/", "deepspeed"),
]
KEYS = ("name", "role", "layer", "dim", "dtype", "norm", "ratio", "status")


def _audit(target: str) -> dict:
    res = run_cli(["audit", target, "--format", "json"])
    assert res.code in (0, 1), res.err
    return json.loads(res.out)


def _same(remote: dict, local: dict) -> None:
    assert [[n[k] for k in KEYS] for n in remote["norms"]] == \
        [[n[k] for k in KEYS] for n in local["norms"]]
    assert remote["format"] == local["format"]
    assert sorted((f["code"], f["tensor"]) for f in remote["findings"]) == \
        sorted((f["code"], f["tensor"]) for f in local["findings"])


@pytest.fixture(scope="module")
def http() -> RangeServer:
    with RangeServer(str(DATA)) as srv:
        yield srv


@pytest.mark.parametrize(("layout", "fmt"), LAYOUTS)
def test_http_equals_local(http: RangeServer, layout: str, fmt: str) -> None:
    local = _audit(str(DATA / layout))
    http.reset_counts()
    remote = _audit(http.url(layout))
    assert remote["format"] == fmt
    _same(remote, local)
    size = sum(p.stat().st_size for p in (DATA / layout).rglob("*") if p.is_file())
    assert 0 < http.bytes_served <= size  # never more than the files themselves


@pytest.mark.parametrize("layout", ["megatron/torch_dist", "megatron/legacy_tp1",
                                    "deepspeed/zero2"])
def test_http_folder_url_without_trailing_slash(http: RangeServer, layout: str) -> None:
    _same(_audit(http.url(layout)), _audit(str(DATA / layout)))


def test_http_torch_dist_fetches_metadata_plus_gain_chunks(http: RangeServer) -> None:
    it = DATA / "megatron" / "torch_dist" / "iter_0000010"
    http.reset_counts()
    doc = _audit(http.url("megatron/torch_dist/"))
    distcp = sum(p.stat().st_size for p in it.glob("*.distcp"))
    # .metadata + common.pt + 14 gain chunks (values + ~1.2 KB torch.save framing each), plus
    # the remote layer's one 64 KiB head block per .distcp file (see ckpt_audit/remote.py)
    budget = ((it / ".metadata").stat().st_size + (it / "common.pt").stat().st_size
              + 14 * 1600 + 2 * 65536)
    assert http.bytes_served <= budget < distcp
    assert len(doc["norms"]) == 14


def test_http_missing_iteration_is_a_clear_error(http: RangeServer, tmp_path: Path) -> None:
    res = run_cli(["audit", http.url("megatron/legacy_tp1/iter_0000099/")])
    assert res.code == 2 and len(res.err.strip().splitlines()) == 1


@pytest.fixture(scope="module")
def s3_opts() -> Iterator[dict]:
    with moto_s3("ckpts") as (opts, client):
        for sub in ("megatron/legacy_pp2_vp2", "megatron/torch_dist", "deepspeed/zero3_dp2"):
            for p in (DATA / sub).rglob("*"):
                if p.is_file():
                    client.upload_file(str(p), "ckpts", str(p.relative_to(DATA)))
        yield opts


@pytest.mark.parametrize("layout", ["megatron/legacy_pp2_vp2", "megatron/torch_dist",
                                    "deepspeed/zero3_dp2"])
def test_s3_equals_local(s3_opts: dict, layout: str, monkeypatch: pytest.MonkeyPatch) -> None:
    local = _audit(str(DATA / layout))
    monkeypatch.setenv("CKPT_AUDIT_STORAGE_OPTIONS", json.dumps(s3_opts))
    _same(_audit(f"s3://ckpts/{layout}/"), local)
