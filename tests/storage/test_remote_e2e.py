"""End to end: ``ckpt-audit audit http://127.0.0.1:PORT/...`` gives the local folder's figures.

Checkpoints are written by the real ``safetensors`` and ``gguf`` writers (and the real llama2.c
model when present), served by a real HTTP server on loopback that counts what it sends.
"""

from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest

from ckpt_audit.cli import main
from tests.support.range_server import RangeServer

HEAD_BLOCK = 64 * 1024
D, VOCAB, LAYERS, FF = 64, 2048, 2, 172


def _cli(capsys, *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main(list(args))
    out, err = capsys.readouterr()
    return int(exc.value.code or 0), out, err


def _audit_json(capsys, target: str) -> dict:
    code, out, err = _cli(capsys, "audit", target, "--format", "json")
    assert code in (0, 1), err
    return json.loads(out)


def _figures(report: dict) -> list[tuple]:
    return [(n["name"], n["role"], n["layer"], n["dim"], n["norm"], n["ratio"], n["status"])
            for n in report["norms"]]


@pytest.fixture(scope="module")
def llama_folder(tmp_path_factory):
    """A sharded Llama-shaped safetensors checkpoint (2 shards, index, config.json)."""
    from safetensors.numpy import save_file

    root = tmp_path_factory.mktemp("served")
    folder = root / "llama"
    folder.mkdir()
    rng = np.random.default_rng(3)
    shards: list[dict[str, np.ndarray]] = [{}, {}]
    shards[0]["model.embed_tokens.weight"] = rng.normal(size=(VOCAB, D)).astype(np.float32)
    for i in range(LAYERS):
        s = shards[i]
        p = f"model.layers.{i}."
        s[p + "input_layernorm.weight"] = rng.normal(0.7, 0.2, D).astype(np.float32)
        s[p + "post_attention_layernorm.weight"] = rng.normal(0.5, 0.2, D).astype(np.float32)
        for proj in ("q", "k", "v", "o"):
            s[p + f"self_attn.{proj}_proj.weight"] = rng.normal(size=(D, D)).astype(np.float32)
        for proj, shape in (("gate", (FF, D)), ("up", (FF, D)), ("down", (D, FF))):
            s[p + f"mlp.{proj}_proj.weight"] = rng.normal(size=shape).astype(np.float32)
    shards[1]["model.norm.weight"] = rng.normal(0.9, 0.1, D).astype(np.float32)
    shards[1]["lm_head.weight"] = rng.normal(size=(VOCAB, D)).astype(np.float32)
    weight_map = {}
    for k, tensors in enumerate(shards):
        fname = f"model-{k + 1:05d}-of-00002.safetensors"
        save_file(tensors, str(folder / fname), metadata={"format": "pt"})
        weight_map.update({n: fname for n in tensors})
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    (folder / "config.json").write_text(json.dumps({
        "model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": D,
        "num_hidden_layers": LAYERS, "vocab_size": VOCAB}))
    gains = {n: v for s in shards for n, v in s.items() if n.endswith("norm.weight")}
    return root, folder, gains


def test_http_folder_audit_equals_local(llama_folder, capsys):
    root, folder, gains = llama_folder
    local = _audit_json(capsys, str(folder))
    with RangeServer(str(root)) as srv:
        for url in (srv.url("llama/"), srv.url("llama")):
            srv.reset_counts()
            remote = _audit_json(capsys, url)
            assert _figures(remote) == _figures(local)
            assert remote["format"] == "safetensors" and remote["d_model"] == D
            assert remote["bytes_read"] == srv.bytes_served
            # the budget: the small files, one head block per shard, then the gains' bytes
            small = sum(os.path.getsize(folder / f) for f in
                        ("model.safetensors.index.json", "config.json"))
            shard_sizes = [os.path.getsize(folder / f) for f in os.listdir(folder)
                           if f.endswith(".safetensors")]
            budget = small + sum(min(s, HEAD_BLOCK) for s in shard_sizes) + \
                sum(4 * v.size for v in gains.values())
            assert remote["bytes_read"] <= budget < sum(shard_sizes) / 3
    # figures against numpy on the written values
    for rec in local["norms"]:
        v = gains[rec["name"]].astype(np.float64)
        assert rec["norm"] == pytest.approx(np.linalg.norm(v), rel=1e-12)
        assert rec["ratio"] == pytest.approx(np.linalg.norm(v) / math.sqrt(v.size), rel=1e-12)


def test_http_errors_are_one_line_exit_2(llama_folder, capsys):
    root, _, _ = llama_folder
    header = json.dumps({"model.norm.weight": {"dtype": "F32", "shape": [2**26],
                                               "data_offsets": [0, 2**28]}}).encode()
    with open(root / "big.safetensors", "wb") as f:  # 256 MiB, sparse
        f.write(len(header).to_bytes(8, "little") + header)
        f.truncate(8 + len(header) + 2**28)
    with RangeServer(str(root)) as srv:
        srv.forbid("llama/")
        code, out, err = _cli(capsys, "audit", srv.url("llama/model-00001-of-00002.safetensors"))
        assert code == 2 and err.count("\n") == 1
        assert "access denied (HTTP 403)" in err and srv.url("llama/") in err
        srv.forbidden.clear()
        code, _, err = _cli(capsys, "audit", srv.url("llama/missing.safetensors"))
        assert code == 2 and "missing.safetensors" in err and "\n" == err[-1]
        srv.ignore_range = True  # small files are accepted whole; a big one is refused
        code, _, err = _cli(capsys, "audit", srv.url("big.safetensors"))
        assert code == 2 and "ignored the Range header" in err and "big.safetensors" in err


def test_gguf_over_http_equals_local(tmp_path, capsys):
    gguf = pytest.importorskip("gguf")
    rng = np.random.default_rng(5)
    path = tmp_path / "tiny.gguf"
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_embedding_length(D)
    w.add_block_count(2)
    w.add_tensor("token_embd.weight", rng.normal(size=(VOCAB, D)).astype(np.float16))
    for i in range(2):
        w.add_tensor(f"blk.{i}.attn_norm.weight", rng.normal(0.6, 0.1, D).astype(np.float32))
        w.add_tensor(f"blk.{i}.ffn_norm.weight", rng.normal(0.6, 0.1, D).astype(np.float32))
    w.add_tensor("output_norm.weight", rng.normal(1.0, 0.1, D).astype(np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    local = _audit_json(capsys, str(path))
    assert local["format"] == "gguf" and local["final"] == "output_norm.weight"
    with RangeServer(str(tmp_path)) as srv:
        remote = _audit_json(capsys, srv.url("tiny.gguf"))
        assert _figures(remote) == _figures(local) and len(remote["norms"]) == 5
        assert remote["bytes_read"] == srv.bytes_served < os.path.getsize(path) / 2


def test_llama2c_over_http_equals_local(capsys, stories_path):
    stories = str(stories_path)
    local = _audit_json(capsys, stories)
    assert local["format"] == "llama2c" and abs(local["final_ratio"] - 1.90) < 0.005
    with RangeServer(os.path.dirname(os.path.realpath(stories))) as srv:
        remote = _audit_json(capsys, srv.url("stories260K.bin"))
        assert _figures(remote) == _figures(local)
        assert remote["bytes_read"] == srv.bytes_served <= HEAD_BLOCK + 11 * 64 * 4


@pytest.mark.slow
def test_deepseek_v3_benchmark_budget(tmp_path):
    """The README benchmark itself: 162 sparse shards, ≤ 1.3 × (metadata + gains) fetched."""
    from benchmarks.bench_remote import run

    result = run(str(tmp_path))
    assert result["ok"], result
    assert result["gains"] == 252 and result["shards"] == 162
    assert result["ratio_to_metadata_plus_gains"] <= 1.3


def test_torch_zip_over_http_equals_local(tmp_path, capsys):
    """The torch reader (zip + allowlisting unpickler) works over ranged HTTP reads too."""
    torch = pytest.importorskip("torch")
    gen = torch.Generator().manual_seed(2)
    sd = {"model.embed_tokens.weight": torch.randn(2048, D, generator=gen),
          "model.norm.weight": 0.9 + 0.1 * torch.randn(D, generator=gen)}
    for i in range(2):
        sd[f"model.layers.{i}.input_layernorm.weight"] = 0.5 + 0.1 * torch.randn(D, generator=gen)
    folder = tmp_path / "pt"
    folder.mkdir()
    torch.save(sd, str(folder / "pytorch_model.bin"))
    (folder / "config.json").write_text(json.dumps({"model_type": "llama", "hidden_size": D}))
    local = _audit_json(capsys, str(folder))
    assert local["format"] == "torch" and len(local["norms"]) == 3
    with RangeServer(str(tmp_path)) as srv:
        remote = _audit_json(capsys, srv.url("pt/"))
        assert _figures(remote) == _figures(local)
        assert remote["bytes_read"] == srv.bytes_served
        assert remote["bytes_read"] < os.path.getsize(folder / "pytorch_model.bin") / 2
