"""Checkpoints as real trainers write them (nanoGPT ckpt.pt, Lightning, EMA copies): the weights
are unwrapped by content and the final norm is found, with truth from stories260K via numpy."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.support.cli import run_cli
from tests.support.trainers import rms, save_nanogpt, stories


@pytest.fixture(scope="module")
def s(stories_path: Path):
    return stories(stories_path)


def _json(args: list[str]) -> tuple[int, dict]:
    r = run_cli(["audit", *args, "--format", "json"])
    assert r.out, r.err
    return r.code, json.loads(r.out)


def test_issue_repro_collapsed_final_fails(tmp_path: Path) -> None:
    """The issue's repro: a 0-d tensor beside ``model`` must not hide the final norm."""
    torch.save({"model": {"_orig_mod.transformer.ln_f.weight": torch.full((64,), 0.25),
                          "_orig_mod.transformer.h.0.ln_1.weight": torch.ones(64)},
                "optimizer": {}, "model_args": {"n_embd": 64}, "iter_num": 5000,
                "best_val_loss": torch.tensor(1.3), "config": {}}, tmp_path / "ckpt.pt")
    code, rep = _json([str(tmp_path / "ckpt.pt")])
    assert code == 1 and rep["verdict"] == "fail"
    assert rep["final"] == "transformer.ln_f.weight" and rep["final_ratio"] == 0.25
    assert (rep["d_model"], rep["d_model_source"]) == (64, "model_args n_embd")


def test_nanogpt_ckpt_from_stories(tmp_path: Path, s) -> None:
    path = save_nanogpt(s, tmp_path / "ckpt.pt")
    code, rep = _json([str(path)])
    norms = {n["name"]: n for n in rep["norms"]}
    assert rep["final"] == "transformer.ln_f.weight"
    assert norms["transformer.ln_f.weight"]["role"] == "final"
    assert norms["transformer.ln_f.weight"]["ratio"] == pytest.approx(rms(s.final), rel=1e-12)
    for i in range(s.n_layers):
        assert norms[f"transformer.h.{i}.ln_1.weight"]["role"] == "layer"
        assert norms[f"transformer.h.{i}.ln_1.weight"]["layer"] == i
        assert norms[f"transformer.h.{i}.ln_2.weight"]["ratio"] == pytest.approx(
            rms(s.ffn[i]), rel=1e-12)
    assert len(norms) == 2 * s.n_layers + 1
    # model_args wins over the training script's globals (config n_embd=999)
    assert (rep["d_model"], rep["d_model_source"]) == (s.dim, "model_args n_embd")
    assert not any("exp_avg" in n for n in norms)


def test_nanogpt_collapsed_final_exit_1(tmp_path: Path, s) -> None:
    path = save_nanogpt(s, tmp_path / "ckpt.pt", final_scale=0.1)
    code, rep = _json([str(path)])
    assert code == 1 and rep["verdict"] == "fail"
    assert rep["final_ratio"] == pytest.approx(rms(s.final * np.float32(0.1)), rel=1e-6)


@pytest.mark.parametrize("wrap", [
    lambda sd: {"state_dict": {"model": sd}, "epoch": 3},
    lambda sd: {"model_state_dict": sd, "loss": torch.tensor(0.5)},
    lambda sd: {"module": {"model": sd}},
    lambda sd: {"state_dict": {f"model.{k}": v for k, v in sd.items()},  # Lightning
                "global_step": 10, "loops": {}},
    lambda sd: {"model": {f"module.{k}": v for k, v in sd.items()}},  # DDP
])
def test_nested_wrappers_and_prefixes(tmp_path: Path, wrap) -> None:
    sd = {"transformer.ln_f.weight": torch.full((32,), 0.3),
          "transformer.h.0.ln_1.weight": torch.ones(32),
          "transformer.h.0.attn.c_attn.weight": torch.zeros(96, 32)}
    torch.save(wrap(sd), tmp_path / "c.pt")
    code, rep = _json([str(tmp_path / "c.pt")])
    assert rep["final"] is not None and rep["final"].endswith("transformer.ln_f.weight")
    assert rep["final_ratio"] == pytest.approx(0.3, rel=1e-6)
    assert code == 1  # 0.3 is a collapse: never a silent pass


def test_state_key_picks_the_ema_copy(tmp_path: Path) -> None:
    def sd(v: float) -> dict:
        return {"transformer.ln_f.weight": torch.full((16,), v),
                "transformer.h.0.ln_1.weight": torch.ones(16)}

    torch.save({"model": sd(1.0), "model_ema": sd(0.2), "step": 1}, tmp_path / "c.pt")
    code, rep = _json([str(tmp_path / "c.pt")])
    assert code == 0 and rep["final_ratio"] == pytest.approx(1.0)  # EMA never mixed in
    code, rep = _json([str(tmp_path / "c.pt"), "--state-key", "model_ema"])
    assert code == 1 and rep["final_ratio"] == pytest.approx(0.2, rel=1e-6)
    r = run_cli(["audit", str(tmp_path / "c.pt"), "--state-key", "ema"])
    assert r.code == 2 and "'ema' is not in this checkpoint" in r.err


def test_state_key_refused_for_safetensors(tmp_path: Path) -> None:
    from safetensors.numpy import save_file

    save_file({"model.norm.weight": np.ones(8, np.float32)}, str(tmp_path / "m.safetensors"))
    r = run_cli(["audit", str(tmp_path / "m.safetensors"), "--state-key", "ema"])
    assert r.code == 2 and "--state-key applies to torch pickles" in r.err


def test_legacy_serialization_same_figures_as_zip(tmp_path: Path, s) -> None:
    """``_use_new_zipfile_serialization=False`` (every torch before 1.6): read through the same
    allowlist, seeking only to the gains' storages, with the zip file's exact figures."""
    zipped = save_nanogpt(s, tmp_path / "zip.pt", final_scale=0.15)
    legacy = save_nanogpt(s, tmp_path / "legacy.pt", final_scale=0.15,
                          _use_new_zipfile_serialization=False)
    assert legacy.read_bytes()[:2] == b"\x80\x02"  # a pickle, not a zip
    code_z, rep_z = _json([str(zipped)])
    code_l, rep_l = _json([str(legacy)])
    assert rep_l["format"] == "torch" and code_l == code_z == 1
    strip = ("checkpoint", "bytes_read")
    assert {k: v for k, v in rep_l.items() if k not in strip} == {
        k: v for k, v in rep_z.items() if k not in strip}
    assert rep_l["final_ratio"] == pytest.approx(rms(s.final * np.float32(0.15)), rel=1e-12)
    # only the gains' storages are read, never the embeddings or matrices
    assert rep_l["bytes_read"] < legacy.stat().st_size / 4


def test_legacy_views_dtypes_and_corruption(tmp_path: Path) -> None:
    from ckpt_audit.errors import FormatError
    from ckpt_audit.readers import open_checkpoint

    base = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    sd = {"a.norm.weight": base[1], "b.norm.weight": base[:, 2],
          "c.norm.weight": torch.linspace(0, 1, 8).to(torch.bfloat16),
          "d.norm.weight": torch.ones(4, dtype=torch.float16)}
    path = tmp_path / "pytorch_model.bin"
    torch.save(sd, path, _use_new_zipfile_serialization=False)
    with open_checkpoint(str(tmp_path)) as r:
        for k, v in sd.items():
            np.testing.assert_array_equal(r.read(k), v.float().numpy())
    raw = path.read_bytes()
    (tmp_path / "cut.bin").write_bytes(raw[:-3])
    with pytest.raises(FormatError, match="do not add up"):
        with open_checkpoint(str(tmp_path / "cut.bin")) as r:
            r.tensors()


def test_legacy_hostile_pickle_refused(tmp_path: Path) -> None:
    import pickle

    from ckpt_audit.readers.torch_legacy import LEGACY_MAGIC

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / "evil.pt"
    path.write_bytes(LEGACY_MAGIC + pickle.dumps(1001, protocol=2) + pickle.dumps({}, protocol=2)
                     + pickle.dumps({"x": Evil()}, protocol=2))
    r = run_cli(["audit", str(path)])
    assert r.code == 2 and "print" in r.err and "not on the allowlist" in r.err
    assert "pwned" not in r.out + r.err
