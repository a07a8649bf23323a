"""llama2.c reader: the real stories260K (v0), v1/v2 files converted from it, bad variants.

The v1 and v2 files are written here by following llama2.c's export.py (version1_export,
version2_export) with plain numpy, from the v0 arrays cut out of the file by an independent
computation (counting back from the end of the file), not by the reader's layout code.
"""

from __future__ import annotations

import os
import struct

import numpy as np
import pytest

from ckpt_audit.errors import FormatError
from ckpt_audit.readers.llama2c_reader import MAGIC, Llama2cReader
from ckpt_audit.storage import location


@pytest.fixture()
def stories(stories_path) -> str:
    """The real stories260K.bin (conftest skips, or fails in CI, when ../shared/data is absent)."""
    return str(stories_path)


def _v0_arrays(raw: bytes) -> tuple[tuple[int, ...], dict[str, np.ndarray]]:
    """Cut a v0 file into its arrays (export.py's legacy_export order), shared classifier."""
    p = struct.unpack_from("<7i", raw)
    d, h, n_layers, heads, kv_heads, v, seq = p
    kv = d * kv_heads // heads
    f = np.frombuffer(raw, "<f4", offset=28)
    sizes = [("emb", v * d), ("att", n_layers * d), ("wq", n_layers * d * d),
             ("wk", n_layers * kv * d), ("wv", n_layers * kv * d), ("wo", n_layers * d * d),
             ("ffn", n_layers * d), ("w1", n_layers * h * d), ("w2", n_layers * d * h),
             ("w3", n_layers * h * d), ("final", d), ("freqs", seq * (d // heads))]
    out, pos = {}, 0
    for name, n in sizes:
        out[name] = f[pos : pos + n]
        pos += n
    assert pos == f.size
    return p, out


def _write_v1(path: str, p: tuple[int, ...], a: dict[str, np.ndarray], version: int = 1,
              group: int = 32) -> None:
    head = struct.pack("<Ii7iB", MAGIC, version, *p, 1)
    if version == 2:
        head += struct.pack("<i", group)
    head += b"\0" * (256 - len(head))
    mats = ["emb", "wq", "wk", "wv", "wo", "w1", "w2", "w3"]
    with open(path, "wb") as out:
        out.write(head)
        for k in ("att", "ffn", "final"):
            out.write(a[k].astype("<f4").tobytes())
        if version == 1:
            for k in mats:
                out.write(a[k].astype("<f4").tobytes())
            return
        scales = []
        for k in mats:  # Q8_0 as in version2_export
            w = a[k].reshape(-1, group).astype(np.float32)
            s = np.abs(w).max(axis=1) / 127.0
            out.write(np.round(w / s[:, None]).astype(np.int8).tobytes())
            scales.append(s.astype("<f4"))
        for s in scales:
            out.write(s.tobytes())


def test_stories260k_final_gain_matches_the_article(stories):
    raw = open(stories, "rb").read()
    # independent: the final gain sits just before the two freq tables at the end of the file
    d, heads, seq = 64, 8, 512
    tail = seq * (d // heads) * 4
    final = np.frombuffer(raw[len(raw) - tail - 4 * d : len(raw) - tail], "<f4")
    with Llama2cReader(location(stories)) as r:
        assert r.config()["hidden_size"] == 64 and r.header.version == 0
        got = r.read("model.norm.weight")
        np.testing.assert_array_equal(got, final)
        norm = float(np.linalg.norm(got.astype(np.float64)))
        assert abs(norm - 15.21) < 0.01
        assert abs(norm / np.sqrt(64) - 1.90) < 0.01
        assert r.bytes_read < 2048  # header + the gain, not the weights


@pytest.mark.parametrize("version", [1, 2])
def test_v1_and_v2_converted_from_v0_give_identical_gains(tmp_path, version, stories):
    raw = open(stories, "rb").read()
    p, a = _v0_arrays(raw)
    path = str(tmp_path / f"stories260K.v{version}.bin")
    _write_v1(path, p, a, version)
    with Llama2cReader(location(stories)) as r0, Llama2cReader(location(path)) as r1:
        assert r1.header.version == version
        gains = [n for n in r0.tensors() if n.endswith("norm.weight")]
        assert len(gains) == 2 * 5 + 1
        g0, g1 = r0.read_many(gains), r1.read_many(gains)
        for n in gains:
            np.testing.assert_array_equal(g0[n], g1[n])
        np.testing.assert_array_equal(g1["model.layers.3.post_attention_layernorm.weight"],
                                      a["ffn"][3 * 64 : 4 * 64])
        if version == 1:  # matrices too
            np.testing.assert_array_equal(r0.read("model.layers.4.mlp.up_proj.weight"),
                                          r1.read("model.layers.4.mlp.up_proj.weight"))


def test_unshared_classifier_v0(tmp_path):
    rng = np.random.default_rng(0)
    d, h, n_layers, heads, kvh, v, seq = 16, 24, 2, 4, 2, 11, 8
    kv = d * kvh // heads
    parts = [rng.normal(size=n).astype("<f4") for n in (
        v * d, n_layers * d, n_layers * d * d, n_layers * kv * d, n_layers * kv * d,
        n_layers * d * d, n_layers * d, n_layers * h * d, n_layers * d * h, n_layers * h * d, d,
        seq * (d // heads) // 2, seq * (d // heads) // 2, v * d)]
    path = tmp_path / "model.bin"
    path.write_bytes(struct.pack("<7i", d, h, n_layers, heads, kvh, -v, seq)
                     + b"".join(x.tobytes() for x in parts))
    with Llama2cReader(location(str(path))) as r:
        assert not r.header.shared_classifier
        np.testing.assert_array_equal(r.read("lm_head.weight"), parts[-1].reshape(v, d))
        np.testing.assert_array_equal(r.read("model.layers.1.input_layernorm.weight"),
                                      parts[1][d:])
        np.testing.assert_array_equal(r.read("model.norm.weight"), parts[10])


def test_truncated_and_padded_files_are_format_errors(tmp_path, stories):
    raw = open(stories, "rb").read()
    short = tmp_path / "short.bin"
    short.write_bytes(raw[:-100])
    with pytest.raises(FormatError, match="truncated.*1056540 bytes, the file is 1056440"):
        Llama2cReader(location(str(short)))
    assert Llama2cReader.detect(location(str(short)))  # *.bin: detected, then refused clearly
    odd = tmp_path / "short.weights"
    odd.write_bytes(raw[:-100])
    assert not Llama2cReader.detect(location(str(odd)))  # no magic, wrong size, no .bin
    long = tmp_path / "long.bin"
    long.write_bytes(raw + b"\0" * 4)
    with pytest.raises(FormatError, match="trailing bytes"):
        Llama2cReader(location(str(long)))


def test_garbage_and_zip_are_not_llama2c(tmp_path):
    import zipfile

    zpath = tmp_path / "pytorch_model.bin"  # torch.save's container: a zip of data.pkl + storages
    with zipfile.ZipFile(zpath, "w", zipfile.ZIP_STORED) as z:
        z.writestr("archive/data.pkl", b"\x80\x02}q\x00.")
        z.writestr("archive/data/0", b"\0" * 4096)
    assert not Llama2cReader.detect(location(str(zpath)))
    with pytest.raises(FormatError, match="zip"):
        Llama2cReader(location(str(zpath)))
    junk = tmp_path / "junk.bin"
    junk.write_bytes(np.random.default_rng(1).bytes(5000))
    assert not Llama2cReader.detect(location(str(junk)))
    with pytest.raises(FormatError, match="not a llama2.c"):
        Llama2cReader(location(str(junk)))


def test_stories260k_over_http_reads_only_header_and_gains(tmp_path, stories):
    from tests.support.range_server import RangeServer

    with RangeServer(os.path.dirname(os.path.realpath(stories))) as srv:
        with Llama2cReader(location(srv.url("stories260K.bin"))) as r:
            g = r.read("model.norm.weight")
            assert abs(float(np.linalg.norm(g.astype(np.float64))) - 15.21) < 0.01
            assert r.bytes_read == srv.bytes_served < 64 * 1024 + 4096


def test_registry_detects_llama2c_by_header(tmp_path, stories):
    from ckpt_audit.readers.registry import open_checkpoint

    renamed = tmp_path / "weights"  # no extension: the header and exact size decide
    renamed.write_bytes(open(stories, "rb").read())
    for path in (stories, str(renamed)):
        with open_checkpoint(path) as r:
            assert r.format == "llama2c"
