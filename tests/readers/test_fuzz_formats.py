"""Fuzz the binary readers: GGUF, llama2.c, torch zip. Files written by the real libraries, then
bytes overwritten or cut by hypothesis. Every outcome is a project error (exit-2 class) or
gains read, within a time bound; never another exception. ``CKPT_AUDIT_FUZZ=N`` scales the runs.
"""

from __future__ import annotations

import os
import struct
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ckpt_audit.errors import CkptAuditError
from ckpt_audit.readers.registry import open_checkpoint

SCALE = int(os.environ.get("CKPT_AUDIT_FUZZ", "1"))
SETTINGS = settings(max_examples=150 * SCALE, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture,
                                           HealthCheck.too_slow])
edits = st.lists(st.tuples(st.integers(0, 4095), st.binary(min_size=1, max_size=8)),
                 min_size=1, max_size=4)


def _gguf(path: Path) -> bytes:
    import gguf

    w = gguf.GGUFWriter(str(path), "llama")
    w.add_embedding_length(8)
    w.add_block_count(1)
    w.add_array("tokenizer.ggml.tokens", [f"t{i}" for i in range(20)])
    w.add_tensor("output_norm.weight", np.linspace(0.5, 1.5, 8).astype(np.float32))
    w.add_tensor("blk.0.attn_norm.weight", np.ones(8, np.float32))
    w.add_tensor("token_embd.weight", np.ones((16, 8), np.float16))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path.read_bytes()


def _llama2c(path: Path) -> bytes:
    dim, hidden, layers, heads, kv, vocab, seq = 8, 16, 1, 2, 2, 12, 4
    head = struct.pack("<7i", dim, hidden, layers, heads, kv, vocab, seq)
    head_dim = dim // heads
    n = (vocab * dim + layers * dim + layers * dim * dim * 2 + layers * kv * head_dim * dim * 2
         + layers * dim + layers * hidden * dim * 3 + dim + seq * head_dim)
    path.write_bytes(head + np.ones(n, np.float32).tobytes())
    return path.read_bytes()


def _torch(path: Path) -> bytes:
    import torch

    torch.save({"model.norm.weight": torch.linspace(0.5, 1.5, 8),
                "model.layers.0.input_layernorm.weight": torch.ones(8)}, path)
    return path.read_bytes()


def _mutate(blob: bytes, cut: int | None, patches: list[tuple[int, bytes]]) -> bytes:
    data = bytearray(blob)
    for off, b in patches:
        off %= max(1, len(data))
        data[off : off + len(b)] = b
    if cut is not None:
        data = data[: cut % (len(data) + 1)]
    return bytes(data)


def _check(path: Path) -> None:
    t0 = time.monotonic()
    try:
        with open_checkpoint(str(path)) as r:
            infos = r.tensors()
            names = [n for n in list(infos)[:8] if len(infos[n].shape) == 1]
            for name, value in r.read_many(names).items():
                assert value.shape == infos[name].shape
    except CkptAuditError as exc:
        assert exc.path or str(path) in str(exc)
    assert time.monotonic() - t0 < 10


@pytest.mark.parametrize("make, suffix", [(_gguf, ".gguf"), (_llama2c, ".bin"),
                                          (_torch, ".pt")])
def test_mutated_files_are_an_error_or_read(tmp_path: Path, make, suffix: str) -> None:
    original = make(tmp_path / f"orig{suffix}")
    target = tmp_path / f"fuzz{suffix}"

    @SETTINGS
    @given(st.one_of(st.none(), st.integers(0, 1 << 20)), edits)
    def run(cut: int | None, patches: list[tuple[int, bytes]]) -> None:
        target.write_bytes(_mutate(original, cut, patches))
        _check(target)

    run()


def test_gguf_tensors_that_share_bytes_are_refused(tmp_path: Path) -> None:
    import gguf

    blob = bytearray(_gguf(tmp_path / "m.gguf"))
    reader = gguf.GGUFReader(str(tmp_path / "m.gguf"))
    offs = {t.name: int(t.field.parts[-1][0]) for t in reader.tensors}  # data offset field
    pos = {t.name: int(t.field.offset + sum(len(p.tobytes()) for p in t.field.parts[:-1]))
           for t in reader.tensors}
    # point the final norm at the bytes of the layer norm
    at = pos["output_norm.weight"]
    blob[at : at + 8] = offs["blk.0.attn_norm.weight"].to_bytes(8, "little")
    (tmp_path / "alias.gguf").write_bytes(bytes(blob))
    with pytest.raises(CkptAuditError, match="overlaps"):
        with open_checkpoint(str(tmp_path / "alias.gguf")) as r:
            r.tensors()


@pytest.mark.parametrize("method", [1, 12, 99], ids=["shrink", "bzip2-header-only", "unknown"])
def test_a_record_in_an_unreadable_compression_method_is_an_error(tmp_path: Path,
                                                                   method: int) -> None:
    """Found by the fuzz run above: zipfile raises NotImplementedError (or fails in the codec)
    for a method it cannot read, which must be a FormatError naming the file, not a crash."""
    import zipfile

    blob = bytearray(_torch(tmp_path / "orig.pt"))
    with zipfile.ZipFile(tmp_path / "orig.pt") as zf:
        pkl = next(i for i in zf.infolist() if i.filename.endswith("data.pkl"))
    central = blob.index(b"PK\x01\x02" + bytes(blob[pkl.header_offset + 4:pkl.header_offset + 6]))
    while not blob[central + 46:].startswith(pkl.filename.encode()):  # the record's own entry
        central = blob.index(b"PK\x01\x02", central + 4)
    struct.pack_into("<H", blob, central + 10, method)  # central directory: compression method
    struct.pack_into("<H", blob, pkl.header_offset + 8, method)  # local header: the same
    target = tmp_path / "odd.pt"
    target.write_bytes(bytes(blob))
    with pytest.raises(CkptAuditError) as exc, open_checkpoint(str(target)) as r:
        r.read_many(list(r.tensors()))
    assert str(target) in str(exc.value)


def test_a_central_directory_entry_needing_a_newer_zip_version_is_an_error(
        tmp_path: Path) -> None:
    """Found by the fuzz run above: zipfile's constructor raises NotImplementedError for an
    entry whose "version needed to extract" is past 6.3; a FormatError naming the file."""
    blob = bytearray(_torch(tmp_path / "orig.pt"))
    central = blob.index(b"PK\x01\x02")
    struct.pack_into("<H", blob, central + 6, 64)  # version needed to extract: 6.4
    target = tmp_path / "newer.pt"
    target.write_bytes(bytes(blob))
    with pytest.raises(CkptAuditError) as exc, open_checkpoint(str(target)) as r:
        r.tensors()
    assert str(target) in str(exc.value)
