"""``s3://`` through fsspec/s3fs against moto's S3-compatible server on 127.0.0.1.

Dummy credentials, an endpoint on loopback: no traffic leaves the machine.
"""

from __future__ import annotations

import os

import pytest

from ckpt_audit.errors import RemoteError
from ckpt_audit.storage import RemoteOptions, remote_location
from tests.support.s3 import moto_s3

pytest.importorskip("s3fs")
boto3 = pytest.importorskip("boto3")

BUCKET = "ckpts"


@pytest.fixture(scope="module")
def s3():
    """A moto S3 server with one bucket holding a big object and a small folder."""
    with moto_s3(BUCKET) as (opts, client):
        big = os.urandom(2 * 1024 * 1024)
        client.put_object(Bucket=BUCKET, Key="run/big.bin", Body=big)
        client.put_object(Bucket=BUCKET, Key="run/config.json", Body=b'{"hidden_size": 4}')
        yield opts, big


def test_s3_ranged_reads_and_byte_count(s3):
    opts, big = s3
    loc = remote_location(f"s3://{BUCKET}/run/big.bin", RemoteOptions(), opts)
    src = loc.open()
    assert src.read(0, 8) == big[:8]
    assert loc.bytes_read == RemoteOptions().head_block  # one head block, not the object
    got = src.read_ranges([(1_000_000, 100), (1_500_000, 300), (1_000_150, 50)])
    assert got == [big[1_000_000:1_000_100], big[1_500_000:1_500_300], big[1_000_150:1_000_200]]
    assert loc.bytes_read == RemoteOptions().head_block + 200 + 300
    assert src.size() == len(big)


def test_s3_folder_listing_and_errors(s3):
    opts, _ = s3
    folder = remote_location(f"s3://{BUCKET}/run/", RemoteOptions(), opts)
    assert folder.is_dir() and folder.exists()
    assert folder.listdir() == ["big.bin", "config.json"]
    assert folder.child("config.json").read_json() == {"hidden_size": 4}
    missing = folder.child("nope.safetensors")
    assert not missing.exists()
    with pytest.raises(RemoteError, match="not found") as exc:
        missing.open().read(0, 8)
    assert "s3://ckpts/run/nope.safetensors" in str(exc.value)


def test_s3_storage_options_from_environment(s3, monkeypatch):
    import json

    opts, big = s3
    monkeypatch.setenv("CKPT_AUDIT_STORAGE_OPTIONS", json.dumps(opts))
    src = remote_location(f"s3://{BUCKET}/run/big.bin").open()
    assert src.read(123, 4) == big[123:127]


def test_cli_audit_over_s3_equals_local(s3, tmp_path, monkeypatch, capsys):
    """``ckpt-audit audit s3://bucket/folder/`` against moto gives the local folder's figures."""
    import json

    import numpy as np
    from safetensors.numpy import save_file

    from ckpt_audit.cli import main

    opts, _ = s3
    rng = np.random.default_rng(11)
    tensors = {"model.embed_tokens.weight": rng.normal(size=(1024, 32)).astype(np.float32),
               "model.norm.weight": rng.normal(0.9, 0.1, 32).astype(np.float32)}
    for i in range(2):
        tensors[f"model.layers.{i}.input_layernorm.weight"] = \
            rng.normal(0.6, 0.1, 32).astype(np.float32)
    save_file(tensors, str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama", "hidden_size": 32}))
    client = boto3.client("s3", endpoint_url=opts["endpoint_url"], region_name="us-east-1")
    for name in ("model.safetensors", "config.json"):
        client.upload_file(str(tmp_path / name), BUCKET, f"llama/{name}")

    def audit(target: str) -> dict:
        with pytest.raises(SystemExit) as exc:
            main(["audit", target, "--format", "json"])
        out, err = capsys.readouterr()
        assert exc.value.code in (0, 1), err
        return json.loads(out)

    local = audit(str(tmp_path))
    monkeypatch.setenv("CKPT_AUDIT_STORAGE_OPTIONS", json.dumps(opts))
    remote = audit(f"s3://{BUCKET}/llama/")
    keys = ("name", "role", "layer", "dim", "norm", "ratio", "status")
    assert [[n[k] for k in keys] for n in remote["norms"]] == \
        [[n[k] for k in keys] for n in local["norms"]]
    assert len(remote["norms"]) == 3 and remote["final"] == "model.norm.weight"
    assert 0 < remote["bytes_read"] < os.path.getsize(tmp_path / "model.safetensors")
