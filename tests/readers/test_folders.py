"""Folders as trainers and releases leave them: one weight file of any readable format (found
by its content, whatever its name), Meta's consolidated.NN.pth + params.json, and a clear error
for several unrelated candidates. Truth from stories260K via numpy."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.support.cli import run_cli
from tests.support.trainers import meta_state, rms, save_meta, save_nanogpt, stories


@pytest.fixture(scope="module")
def s(stories_path: Path):
    return stories(stories_path)


def _json(path: Path) -> tuple[int, dict]:
    r = run_cli(["audit", str(path), "--format", "json"])
    assert r.out, r.err
    return r.code, json.loads(r.out)


def _tiny_gguf(path: Path) -> float:
    gguf = pytest.importorskip("gguf")
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_embedding_length(16)
    w.add_block_count(1)
    w.add_tensor("blk.0.attn_norm.weight", np.ones(16, np.float32))
    final = np.linspace(0.5, 1.5, 16).astype(np.float32)
    w.add_tensor("output_norm.weight", final)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return rms(final)


def test_nanogpt_out_dir(tmp_path: Path, s) -> None:
    save_nanogpt(s, tmp_path / "ckpt.pt")
    code, rep = _json(tmp_path)
    assert rep["final"] == "transformer.ln_f.weight"
    assert rep["final_ratio"] == pytest.approx(rms(s.final), rel=1e-12)
    assert rep["d_model_source"] == "model_args n_embd"


@pytest.mark.parametrize("name", ["stories260K.bin", "weights", "model.ckpt"])
def test_llama2c_folder_any_name(tmp_path: Path, s, stories_path: Path, name: str) -> None:
    shutil.copy(stories_path, tmp_path / name)
    (tmp_path / "tokenizer.model").write_bytes(b"\x0a\x05hello")
    (tmp_path / "README.md").write_text("a model")
    code, rep = _json(tmp_path)
    assert rep["format"] == "llama2c" and rep["final_ratio"] == pytest.approx(rms(s.final),
                                                                             rel=1e-12)
    assert rep["d_model_source"] == "llama2c header hidden_size"


@pytest.mark.parametrize("name", ["model.gguf", "weights.bin"])
def test_gguf_folder_any_name(tmp_path: Path, name: str) -> None:
    truth = _tiny_gguf(tmp_path / name)
    code, rep = _json(tmp_path)
    assert rep["format"] == "gguf" and rep["final"] == "output_norm.weight"
    assert rep["final_ratio"] == pytest.approx(truth, rel=1e-12)
    assert rep["d_model_source"] == "gguf metadata hidden_size"


def test_meta_consolidated_one_rank(tmp_path: Path, s) -> None:
    save_meta(s, tmp_path, ranks=1)
    code, rep = _json(tmp_path)
    norms = {n["name"]: n for n in rep["norms"]}
    assert rep["format"] == "meta" and rep["final"] == "norm.weight"
    assert (rep["d_model"], rep["d_model_source"]) == (s.dim, "params.json dim")
    assert norms["layers.2.attention_norm.weight"]["role"] == "layer"
    assert norms["layers.2.ffn_norm.weight"]["ratio"] == pytest.approx(rms(s.ffn[2]), rel=1e-12)
    assert rep["final_ratio"] == pytest.approx(rms(s.final), rel=1e-12)
    assert len(norms) == 2 * s.n_layers + 1


def test_meta_model_parallel_is_one_checkpoint(tmp_path: Path, s) -> None:
    save_meta(s, tmp_path, ranks=2)
    code, rep = _json(tmp_path)
    assert rep["format"] == "meta" and rep["final_ratio"] == pytest.approx(rms(s.final),
                                                                          rel=1e-12)
    assert not [f for f in rep["findings"] if f["code"] == "tp-mismatch"]
    from ckpt_audit.readers import open_checkpoint

    with open_checkpoint(str(tmp_path)) as r:  # split tensors are concatenated
        assert r.tensors()["tok_embeddings.weight"].shape == (s.vocab, s.dim)
        np.testing.assert_array_equal(r.read("tok_embeddings.weight"), s.emb)
    # a replica that differs in one channel of one gain: tp-mismatch, fail
    sd = meta_state(s, 1, 2)
    sd["layers.1.ffn_norm.weight"] = sd["layers.1.ffn_norm.weight"].clone()
    sd["layers.1.ffn_norm.weight"][3] += 0.5
    torch.save(sd, tmp_path / "consolidated.01.pth")
    code, rep = _json(tmp_path)
    bad = [f for f in rep["findings"] if f["code"] == "tp-mismatch"]
    assert code == 1 and len(bad) == 1 and bad[0]["tensor"] == "layers.1.ffn_norm.weight"
    assert "consolidated.00.pth vs consolidated.01.pth" in bad[0]["message"]
    (tmp_path / "consolidated.01.pth").rename(tmp_path / "consolidated.02.pth")
    r = run_cli(["audit", str(tmp_path)])
    assert r.code == 2 and "consolidated.01.pth is missing" in r.err


def test_several_candidates_one_line(tmp_path: Path, s, stories_path: Path) -> None:
    save_nanogpt(s, tmp_path / "ckpt.pt")
    shutil.copy(stories_path, tmp_path / "stories.bin")
    r = run_cli(["audit", str(tmp_path)])
    assert r.code == 2 and len(r.err.strip().splitlines()) == 1
    assert "ckpt.pt: torch" in r.err and "stories.bin: llama2c" in r.err


def test_empty_folder_says_what_is_accepted(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("nothing here")
    r = run_cli(["audit", str(tmp_path)])
    assert r.code == 2 and len(r.err.strip().splitlines()) == 1
    for accepted in ("consolidated.NN.pth + params.json", "GGUF", "llama2.c", "legacy",
                     "whatever its name"):
        assert accepted in r.err
