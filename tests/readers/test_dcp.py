"""PyTorch Distributed Checkpoints: written by torch.distributed.checkpoint.save itself.

One checkpoint is written here, in this process, with no process group (DCP's single-process
mode); tests/data/dcp/sharded2 was written by two gloo ranks with every tensor sharded in two
(make_dcp_fixtures.py), so each gain is assembled from two chunks in two files.
"""

from __future__ import annotations

import io
import json
import math
import pickle
import warnings
from pathlib import Path

import numpy as np
import pytest

from ckpt_audit.readers import open_checkpoint
from ckpt_audit.readers.dcp_metadata import parse_metadata
from tests.support.cli import run_cli

torch = pytest.importorskip("torch")
DATA = Path(__file__).resolve().parents[1] / "data" / "dcp"


def _state() -> dict[str, object]:
    """A Llama-named model state (mixed dtypes) as FSDP's get_model_state_dict returns it."""
    g = torch.Generator().manual_seed(3)
    model = {
        "model.embed_tokens.weight": torch.randn(16, 32, generator=g),
        "model.layers.0.input_layernorm.weight": 1 + 0.2 * torch.randn(32, generator=g),
        "model.layers.0.post_attention_layernorm.weight": (0.5 + 0.1 * torch.randn(
            32, generator=g)).to(torch.bfloat16),
        "model.layers.0.self_attn.q_norm.weight": (1 + 0.3 * torch.randn(8, generator=g)).half(),
        "model.norm.weight": (1.5 + 0.2 * torch.randn(32, generator=g)).double(),
        "lm_head.weight": torch.randn(16, 32, generator=g),
    }
    return model


@pytest.fixture(scope="module")
def single(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, object]]:
    import torch.distributed.checkpoint as dcp
    from safetensors.torch import save_file

    root = tmp_path_factory.mktemp("dcp1")
    model = _state()
    # as accelerate's FSDP saving does: {"model": HF state dict} -> "model.model.norm.weight"
    state = {"model": model,
             "optim": {"state": {"x": {"exp_avg": torch.zeros(32)}}},
             "step": 12, "extra": io.BytesIO(b"opaque")}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dcp.save(state, checkpoint_id=str(root / "ckpt"))
    save_file({f"model.{k}": v for k, v in model.items()}, str(root / "ref.safetensors"))
    return root, state


def test_single_process_dcp_values(single: tuple[Path, dict[str, object]]) -> None:
    root, state = single
    with open_checkpoint(str(root / "ckpt")) as r:
        assert r.format == "dcp"
        infos = r.tensors()
        assert not any(n.startswith("optim") for n in infos)
        assert "step" not in infos and "extra" not in infos
        model = state["model"]
        assert isinstance(model, dict)
        expect = {"model.model.norm.weight": "F64",
                  "model.model.layers.0.post_attention_layernorm.weight": "BF16",
                  "model.model.layers.0.self_attn.q_norm.weight": "F16",
                  "model.model.embed_tokens.weight": "F32"}
        for name, dtype in expect.items():
            assert infos[name].dtype == dtype
        for key, t in model.items():
            got = r.read(f"model.{key}")
            np.testing.assert_array_equal(got, t.float().numpy() if t.dtype != torch.float64
                                          else t.numpy())


def test_single_process_dcp_cli_matches_safetensors(single: tuple[Path, dict[str, object]],
                                                    tmp_path: Path) -> None:
    root, state = single
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    assert run_cli(["audit", str(root / "ckpt"), "-f", "json", "-o", str(a)]).code in (0, 1)
    assert run_cli(["audit", str(root / "ref.safetensors"), "-f", "json", "-o",
                    str(b)]).code in (0, 1)
    got = {n["name"]: n for n in json.loads(a.read_text())["norms"]}
    want = {n["name"]: n for n in json.loads(b.read_text())["norms"]}
    assert set(got) == set(want) and len(got) == 4
    assert got["model.model.norm.weight"]["role"] == "final"
    assert got["model.model.norm.weight"]["dtype"] == "F64"
    for name, rec in got.items():
        for key in ("norm", "ratio", "dim", "role", "dtype", "min", "max"):
            assert rec[key] == want[name][key], (name, key)


def test_two_rank_sharded_checkpoint_is_assembled() -> None:
    from safetensors.torch import load_file

    meta = parse_metadata((DATA / "sharded2" / ".metadata").read_bytes(), "x")
    assert {c.file for c in meta["norm.weight"].chunks} == {"__0_0.distcp", "__1_0.distcp"}
    ref = {k: v.float().numpy() for k, v in load_file(str(DATA / "reference.safetensors")).items()}
    with open_checkpoint(str(DATA / "sharded2")) as r:
        infos = r.tensors()
        assert set(infos) == set(ref)  # optimizer moments and train_state bytes left out
        gains = [n for n in infos if "norm" in n]
        vals = r.read_many(gains)
        for n in gains:
            np.testing.assert_array_equal(vals[n], ref[n])
        np.testing.assert_array_equal(r.read("tok_embeddings.weight"),
                                      ref["tok_embeddings.weight"])
        total = sum(p.stat().st_size for p in (DATA / "sharded2").iterdir())
        assert r.bytes_read < total


def test_two_rank_cli_figures(tmp_path: Path) -> None:
    from safetensors.torch import load_file

    out = tmp_path / "a.json"
    assert run_cli(["audit", str(DATA / "sharded2"), "-f", "json", "-o", str(out)]).code in (0, 1)
    doc = json.loads(out.read_text())
    ref = load_file(str(DATA / "reference.safetensors"))
    assert doc["format"] == "dcp" and doc["d_model"] == 64
    norms = {n["name"]: n for n in doc["norms"]}
    assert norms["norm.weight"]["role"] == "final"
    assert len(norms) == 5
    for name, rec in norms.items():
        vec = ref[name].double().numpy()
        assert rec["norm"] == pytest.approx(float(np.sqrt((vec * vec).sum())), rel=1e-12)
        assert rec["ratio"] == pytest.approx(rec["norm"] / math.sqrt(vec.size), rel=1e-12)


def _copy(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


def _error_line(path: Path) -> str:
    res = run_cli(["audit", str(path)])
    assert res.code == 2, (res.out, res.err)
    lines = res.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ckpt-audit: error: ")
    return lines[0]


def test_malicious_metadata_is_refused(tmp_path: Path) -> None:
    root = _copy(DATA / "sharded2", tmp_path / "c")
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self) -> tuple:
            import os

            return (os.system, (f"touch {marker}",))

    (root / ".metadata").write_bytes(pickle.dumps(Evil()))
    line = _error_line(root)
    assert "refused to unpickle" in line and ".metadata" in line
    assert not marker.exists()


def test_truncated_chunk_file(tmp_path: Path) -> None:
    root = _copy(DATA / "sharded2", tmp_path / "c")
    f = root / "__1_0.distcp"
    f.write_bytes(f.read_bytes()[:2000])
    assert "__1_0.distcp" in _error_line(root)


def test_metadata_not_a_pickle(tmp_path: Path) -> None:
    root = _copy(DATA / "sharded2", tmp_path / "c")
    (root / ".metadata").write_bytes(b"\x00garbage" * 10)
    assert ".metadata" in _error_line(root)


def test_nemo2_layout_weights_folder_and_module_prefix(tmp_path: Path) -> None:
    """NeMo 2 keeps Megatron torch_dist under <ckpt>/weights/ with "module."-prefixed names."""
    import torch.distributed.checkpoint as dcp

    g = torch.Generator().manual_seed(5)
    stacked = 1 + 0.1 * torch.randn(3, 16, generator=g)
    final = 1 + 0.3 * torch.randn(16, generator=g)
    root = tmp_path / "nemo2"
    weights = root / "weights"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dcp.save({"module.decoder.layers.self_attention.linear_qkv.layer_norm_weight": stacked,
                  "module.decoder.final_layernorm.weight": final,
                  "optimizer.state.exp_avg.module.decoder.final_layernorm.weight":
                      torch.zeros(16)}, checkpoint_id=str(weights))
    (weights / "metadata.json").write_text(json.dumps(
        {"sharded_backend": "torch_dist", "sharded_backend_version": 1,
         "common_backend": "torch", "common_backend_version": 1}))
    (root / "context").mkdir()
    (root / "context" / "model.yaml").write_text("_target_: nemo.collections.llm.GPTModel\n")
    with open_checkpoint(str(root)) as r:
        assert r.format == "megatron-torch_dist"
        names = sorted(r.tensors())
        assert names == ["decoder.final_layernorm.weight"] + [
            f"decoder.layers.{i}.self_attention.linear_qkv.layer_norm_weight" for i in range(3)]
        vals = r.read_many(names)
        for i in range(3):
            np.testing.assert_array_equal(
                vals[f"decoder.layers.{i}.self_attention.linear_qkv.layer_norm_weight"],
                stacked[i].numpy())
        np.testing.assert_array_equal(vals["decoder.final_layernorm.weight"], final.numpy())
