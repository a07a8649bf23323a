"""GGUF reader against files written by the real ``gguf.GGUFWriter`` and read back by
``gguf.GGUFReader`` (the independent reference), plus corrupt and truncated variants."""

from __future__ import annotations

import os
import struct

import numpy as np
import pytest

from ckpt_audit.errors import FormatError
from ckpt_audit.readers.gguf_reader import GGUFReader
from ckpt_audit.storage import location

gguf = pytest.importorskip("gguf")

D, LAYERS, HEAD = 64, 3, 16


def _gains(rng: np.random.Generator) -> dict[str, np.ndarray]:
    g = {"output_norm.weight": rng.normal(0.8, 0.1, D).astype(np.float32)}
    for i in range(LAYERS):
        g[f"blk.{i}.attn_norm.weight"] = rng.normal(0.6, 0.2, D).astype(np.float32)
        g[f"blk.{i}.ffn_norm.weight"] = rng.normal(0.5, 0.2, D).astype(np.float32)
        g[f"blk.{i}.attn_q_norm.weight"] = rng.normal(1.0, 0.1, HEAD).astype(np.float32)
        g[f"blk.{i}.attn_k_norm.weight"] = rng.normal(1.0, 0.1, HEAD).astype(np.float32)
        g[f"blk.{i}.post_attention_norm.weight"] = np.ones(D, np.float32)
        g[f"blk.{i}.post_ffw_norm.weight"] = rng.normal(2.0, 0.1, D).astype(np.float32)
    return g


@pytest.fixture()
def written(tmp_path):
    """A small gemma3-like GGUF: metadata, a long tokenizer array, F32 gains, F16 and Q8_0
    matrices."""
    rng = np.random.default_rng(7)
    path = str(tmp_path / "model.gguf")
    w = gguf.GGUFWriter(path, "gemma3")
    w.add_embedding_length(D)
    w.add_block_count(LAYERS)
    w.add_head_count(4)
    w.add_context_length(128)
    w.add_array("tokenizer.ggml.tokens", [f"tok{i}" for i in range(300)])
    w.add_array("tokenizer.ggml.scores", [float(i) for i in range(300)])
    gains = _gains(rng)
    for name, value in gains.items():
        w.add_tensor(name, value)
    emb = rng.normal(size=(2000, D)).astype(np.float16)
    w.add_tensor("token_embd.weight", emb)
    mat = rng.normal(size=(48, D)).astype(np.float32)
    w.add_tensor("blk.0.attn_q.weight", gguf.quants.quantize(mat, gguf.GGMLQuantizationType.Q8_0),
                 raw_dtype=gguf.GGMLQuantizationType.Q8_0)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path, gains, emb, mat


def test_matches_the_gguf_package(written):
    path, gains, emb, mat = written
    ref = gguf.GGUFReader(path)
    with GGUFReader(location(path)) as r:
        infos = r.tensors()
        assert set(infos) == {t.name for t in ref.tensors}
        for t in ref.tensors:
            mine = r.header.tensors[t.name]
            assert mine.start == t.data_offset and mine.nbytes == t.n_bytes
            assert infos[t.name].shape == tuple(int(x) for x in reversed(t.shape))
        assert infos["token_embd.weight"].shape == (2000, D) and infos["token_embd.weight"].dtype \
            == "F16"
        assert infos["blk.0.attn_q.weight"].dtype == "Q8_0"
        got = r.read_many(list(gains))
        for name, value in gains.items():
            np.testing.assert_array_equal(got[name], value)
        np.testing.assert_array_equal(r.read("token_embd.weight"), emb.astype(np.float32))
        q = r.read("blk.0.attn_q.weight")
        assert q.shape == mat.shape and np.abs(q - mat).max() < 0.05  # Q8_0 error bound
        cfg = r.config()
        assert cfg["hidden_size"] == D and cfg["num_hidden_layers"] == LAYERS
        assert cfg["model_type"] == "gemma3" and cfg["gemma3.context_length"] == 128
        assert "tokenizer.ggml.tokens" not in cfg  # long arrays are summarised, not kept
        assert r.convention_hint.value == "direct"
        # figures: the final gain's norm against numpy on the written values
        final = got["output_norm.weight"].astype(np.float64)
        assert np.linalg.norm(final) == pytest.approx(
            np.linalg.norm(gains["output_norm.weight"].astype(np.float64)))


def test_reads_only_header_and_gains(written):
    path, gains, _, _ = written
    loc = location(path)
    with GGUFReader(loc) as r:
        header_bytes = loc.bytes_read
        assert header_bytes <= max(r.header.data_start, 64 * 1024)  # one first chunk
        assert header_bytes < 0.5 * os.path.getsize(path)
        r.read_many(list(gains))
        assert loc.bytes_read - header_bytes == sum(4 * v.size for v in gains.values())


def test_detect_by_magic_not_extension(written, tmp_path):
    path, _, _, _ = written
    renamed = tmp_path / "weights.bin"
    renamed.write_bytes(open(path, "rb").read())
    assert GGUFReader.detect(location(str(renamed)))
    other = tmp_path / "other.gguf"
    other.write_bytes(b"\0" * 100)
    assert not GGUFReader.detect(location(str(other)))


def _patched(src: str, dst, offset: int, value: bytes) -> str:
    raw = bytearray(open(src, "rb").read())
    raw[offset : offset + len(value)] = value
    dst.write_bytes(bytes(raw))
    return str(dst)


def test_truncated_data_is_one_clear_error(written, tmp_path):
    path, _, _, _ = written
    raw = open(path, "rb").read()
    (tmp_path / "cut.gguf").write_bytes(raw[:-64])
    with pytest.raises(FormatError, match="outside the") as exc:
        GGUFReader(location(str(tmp_path / "cut.gguf")))
    assert "cut.gguf" in str(exc.value) and "\n" not in str(exc.value)
    (tmp_path / "head.gguf").write_bytes(raw[:2000])
    with pytest.raises(FormatError, match="truncated or corrupt"):
        GGUFReader(location(str(tmp_path / "head.gguf")))


def test_absurd_counts_and_lengths_are_refused_before_use(written, tmp_path):
    path, _, _, _ = written
    huge_count = _patched(path, tmp_path / "count.gguf", 8, struct.pack("<Q", 2**40))
    with pytest.raises(FormatError, match="cannot fit"):
        GGUFReader(location(huge_count))
    huge_key = _patched(path, tmp_path / "key.gguf", 24, struct.pack("<Q", 2**62))
    with pytest.raises(FormatError, match="metadata key needs"):
        GGUFReader(location(huge_key))
    bad_version = _patched(path, tmp_path / "ver.gguf", 4, struct.pack("<I", 99))
    with pytest.raises(FormatError, match="version 99"):
        GGUFReader(location(bad_version))


def test_registry_detects_gguf_by_magic(written):
    from ckpt_audit.readers.registry import open_checkpoint

    path, _, _, _ = written
    with open_checkpoint(path) as r:
        assert r.format == "gguf"
