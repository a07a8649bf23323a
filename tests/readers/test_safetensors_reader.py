"""The safetensors reader on files written by safetensors and transformers, and on bad files."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import save_file

from ckpt_audit.errors import CkptAuditError, DetectionError, FormatError
from ckpt_audit.readers import open_checkpoint
from tests.support.hf_models import build, perturb_gains


def test_sharded_save_pretrained_reads_only_gain_bytes(tmp_path: Path) -> None:
    model = build("llama")
    perturb_gains(model)
    model.save_pretrained(tmp_path, max_shard_size="40KB")
    assert (tmp_path / "model.safetensors.index.json").exists()
    shards = list(tmp_path.glob("*.safetensors"))
    assert len(shards) > 2
    with open_checkpoint(str(tmp_path)) as r:
        assert r.format == "safetensors"
        names = r.tensors()
        sd = model.state_dict()
        assert set(names) >= {"model.norm.weight", "model.layers.1.input_layernorm.weight"}
        gains = [n for n in names if "norm" in n]
        before = r.bytes_read
        vals = r.read_many(gains)
        for n in gains:
            np.testing.assert_array_equal(vals[n], sd[n].numpy())
        # exactly the gains' bytes after the headers
        assert r.bytes_read - before == sum(sd[n].numel() * 4 for n in gains)
        header_bytes = sum(8 + struct.unpack("<Q", p.read_bytes()[:8])[0] for p in shards)
        index_bytes = (tmp_path / "model.safetensors.index.json").stat().st_size
        assert before == header_bytes + index_bytes
        assert r.config()["hidden_size"] == 64


def test_bf16_and_fp16_values(tmp_path: Path) -> None:
    t = {"model.norm.weight": torch.randn(64).to(torch.bfloat16),
         "x.norm.weight": torch.randn(8).half()}
    save_file(t, tmp_path / "m.safetensors")
    with open_checkpoint(str(tmp_path / "m.safetensors")) as r:
        for k, v in t.items():
            np.testing.assert_array_equal(r.read(k), v.float().numpy())


def _write(path: Path, data: bytes) -> str:
    path.write_bytes(data)
    return str(path)


def test_bad_files(tmp_path: Path) -> None:
    good = tmp_path / "good.safetensors"
    save_file({"model.norm.weight": torch.ones(16)}, good)
    blob = good.read_bytes()
    cases = {
        "empty": b"",
        "truncated": blob[: len(blob) - 10],
        "nonjson": struct.pack("<Q", 5) + b"{nope" + b"\0" * 8,
        "oversized": struct.pack("<Q", 200_000_000) + b"{}",
    }
    for label, data in cases.items():
        p = _write(tmp_path / f"{label}.safetensors", data)
        with pytest.raises(FormatError) as ei:
            open_checkpoint(p).tensors()
        assert p in str(ei.value), label


def test_index_naming_missing_shard(tmp_path: Path) -> None:
    save_file({"a": torch.ones(2)}, tmp_path / "model-00001-of-00002.safetensors")
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {
        "a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}))
    with pytest.raises(FormatError, match="missing shard"):
        open_checkpoint(str(tmp_path))


def test_index_mapping_a_name_the_shard_lacks(tmp_path: Path) -> None:
    save_file({"a": torch.ones(2)}, tmp_path / "s1.safetensors")
    (tmp_path / "model.safetensors.index.json").write_text(
        json.dumps({"weight_map": {"a": "s1.safetensors", "zz": "s1.safetensors"}}))
    with pytest.raises(FormatError, match="does not hold it"):
        open_checkpoint(str(tmp_path)).tensors()


def test_folder_without_checkpoint(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(DetectionError, match="looked for"):
        open_checkpoint(str(tmp_path))
    with pytest.raises(CkptAuditError, match="no such"):
        open_checkpoint(str(tmp_path / "absent"))


_NAMES = ["a", "b", "c", "d", "e"]
_SHARDS = ["s1.safetensors", "s2.safetensors", "s3.safetensors"]


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                   HealthCheck.function_scoped_fixture])
@given(held=st.lists(st.sets(st.sampled_from(_NAMES), min_size=1), min_size=1, max_size=3),
       index=st.dictionaries(st.sampled_from(_NAMES), st.integers(0, 2), min_size=1))
def test_index_and_headers_are_held_to_each_other(tmp_path_factory: pytest.TempPathFactory,
                                                  held: list[set[str]],
                                                  index: dict[str, int]) -> None:
    """Whatever the index says, the reader maps each name to the file (of those the index
    names) whose header holds it, refuses a name held twice or an index entry no header holds,
    and never trusts the index over the headers (the oracle: the headers alone)."""
    from safetensors.numpy import save_file as save_np

    folder = tmp_path_factory.mktemp("agree")
    for shard, names in zip(_SHARDS, held, strict=False):
        save_np({n: np.ones(2, np.float32) for n in sorted(names)}, str(folder / shard))
    wm = {n: _SHARDS[i % len(held)] for n, i in index.items()}
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": wm}))
    holders: dict[str, list[str]] = {}  # over the files the index names: the checkpoint
    for shard, names in zip(_SHARDS, held, strict=False):
        for n in names:
            if shard in wm.values():
                holders.setdefault(n, []).append(shard)
    twice = any(len(v) > 1 for v in holders.values())
    unheld = set(wm) - set(holders)
    try:
        with open_checkpoint(str(folder)) as r:
            got = {n: Path(info.source).name for n, info in r.tensors().items()}
    except FormatError as exc:
        assert twice or unheld, exc
        return
    assert not twice and not unheld
    assert got == {n: v[0] for n, v in holders.items()}


def test_index_naming_one_shard_twice_is_refused(tmp_path: Path) -> None:
    save_file({"x": torch.ones(2), "y": torch.ones(2)}, tmp_path / "a.safetensors")
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {
        "x": "a.safetensors", "y": "./a.safetensors"}}))
    with pytest.raises(FormatError, match="names one shard twice"):
        open_checkpoint(str(tmp_path)).tensors()


def _shards(tmp_path: Path, first: bytes) -> None:
    """Four shards named by an index: the first with the header ``first``, three good ones."""
    wm = {"x0": "m-0.safetensors"}
    (tmp_path / "m-0.safetensors").write_bytes(struct.pack("<Q", len(first)) + first + b"\0" * 8)
    for i in range(1, 4):
        save_file({f"x{i}": torch.ones(2)}, tmp_path / f"m-{i}.safetensors")
        wm[f"x{i}"] = f"m-{i}.safetensors"
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": wm}))


def test_a_refused_header_stops_the_reading(tmp_path: Path, monkeypatch) -> None:
    """Headers are parsed together, but nothing is read past one known to be refused."""
    from ckpt_audit.readers.safetensors_reader import SafetensorsReader

    _shards(tmp_path, b'{"x0":1}')
    read: list[str] = []
    real = SafetensorsReader._header_bytes
    monkeypatch.setattr(SafetensorsReader, "_header_bytes",
                        lambda self, shard: read.append(shard) or real(self, shard))
    with pytest.raises(FormatError, match="m-0.safetensors"):
        open_checkpoint(str(tmp_path)).tensors()
    assert read == ["m-0.safetensors"]


def test_a_failed_read_comes_after_an_earlier_refusal(tmp_path: Path, monkeypatch) -> None:
    """A canonical first header refused only once its numbers are proven, then a remote error
    reading the next shard: the first shard's refusal is the one raised, as one by one."""
    from ckpt_audit.errors import RemoteError
    from ckpt_audit.readers.safetensors_reader import SafetensorsReader

    _shards(tmp_path, b'{"x0":{"dtype":"F32","shape":[2],"data_offsets":[00,8]}}')
    real = SafetensorsReader._header_bytes

    def fail_second(self: SafetensorsReader, shard: str) -> tuple[bytes, int, str]:
        if shard == "m-1.safetensors":
            raise RemoteError("HTTP 503", shard)
        return real(self, shard)

    monkeypatch.setattr(SafetensorsReader, "_header_bytes", fail_second)
    with pytest.raises(FormatError, match="m-0.safetensors"):
        open_checkpoint(str(tmp_path)).tensors()
