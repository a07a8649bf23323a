"""The torch zip reader: real torch.save files, wrappers and prefixes, and hostile pickles."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from ckpt_audit.errors import FormatError, UnsafePickleError
from ckpt_audit.readers import open_checkpoint
from tests.support.hf_models import build, perturb_gains


@pytest.mark.parametrize("wrapper", [None, "model", "state_dict", "module", "model_state_dict"])
@pytest.mark.parametrize("prefix", ["", "module.", "_orig_mod."])
def test_wrapped_state_dicts(tmp_path: Path, wrapper: str | None, prefix: str) -> None:
    model = build("llama")
    perturb_gains(model)
    sd = {prefix + k: v for k, v in model.state_dict().items()}
    obj = sd if wrapper is None else {wrapper: sd, "optimizer": {"state": {0: {
        "exp_avg": torch.randn(3)}}}, "step": 7}
    torch.save(obj, tmp_path / "ckpt.pt")
    with open_checkpoint(str(tmp_path / "ckpt.pt")) as r:
        assert r.format == "torch"
        names = r.tensors()
        assert "model.norm.weight" in names and not any("exp_avg" in n for n in names)
        np.testing.assert_array_equal(r.read("model.norm.weight"),
                                      model.state_dict()["model.norm.weight"].numpy())


def test_sharded_bin_from_save_pretrained(tmp_path: Path) -> None:
    model = build("gpt2")
    perturb_gains(model)
    # transformers 5 writes only safetensors; shard the .bin way transformers 4 did, with
    # huggingface_hub's own splitter and torch.save.
    import json

    from huggingface_hub import split_torch_state_dict_into_shards

    sd = {k: v.contiguous() for k, v in model.state_dict().items()}
    split = split_torch_state_dict_into_shards(
        sd, filename_pattern="pytorch_model{suffix}.bin", max_shard_size="60KB")
    assert split.is_sharded
    for fname, names in split.filename_to_tensors.items():
        torch.save({n: sd[n] for n in names}, tmp_path / fname)
    (tmp_path / "pytorch_model.bin.index.json").write_text(
        json.dumps({"metadata": split.metadata, "weight_map": split.tensor_to_filename}))
    model.config.to_json_file(tmp_path / "config.json")
    with open_checkpoint(str(tmp_path)) as r:
        assert r.format == "torch"
        sd = model.state_dict()
        np.testing.assert_array_equal(r.read("transformer.ln_f.weight"),
                                      sd["transformer.ln_f.weight"].numpy())
        assert r.config()["n_embd"] == 64


def test_views_and_dtypes(tmp_path: Path) -> None:
    base = torch.randn(4, 6)
    sd = {"a.norm.weight": base[1], "b.norm.weight": base[:, 2], "c": base.t(),
          "d.norm.weight": torch.randn(5).to(torch.bfloat16)}
    torch.save(sd, tmp_path / "v.pth")
    with open_checkpoint(str(tmp_path / "v.pth")) as r:
        for k, v in sd.items():
            np.testing.assert_array_equal(r.read(k), v.float().numpy())


class _Evil:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):  # type: ignore[no-untyped-def]
        import os

        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_is_refused_and_never_run(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    torch.save({"model.norm.weight": torch.ones(4), "x": _Evil(str(marker))},
               tmp_path / "evil.pt")
    with pytest.raises(UnsafePickleError, match="not on the allowlist"):
        open_checkpoint(str(tmp_path / "evil.pt")).tensors()
    assert not marker.exists()


def test_raw_and_legacy_pickles_are_refused(tmp_path: Path) -> None:
    (tmp_path / "raw.pt").write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(Exception) as ei:
        open_checkpoint(str(tmp_path / "raw.pt")).tensors()
    assert "raw.pt" in str(ei.value)
    torch.save({"w": torch.ones(3)}, tmp_path / "legacy.pt", _use_new_zipfile_serialization=False)
    with pytest.raises(FormatError, match="legacy"):
        open_checkpoint(str(tmp_path / "legacy.pt"), format_hint="torch").tensors()


def test_truncated_zip(tmp_path: Path) -> None:
    torch.save({"w": torch.ones(1000)}, tmp_path / "t.pt")
    data = (tmp_path / "t.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(FormatError, match="cut.pt"):
        open_checkpoint(str(tmp_path / "cut.pt")).tensors()


def test_format_hint_torch_reads_a_megatron_pt_with_the_full_allowlist() -> None:
    """The allowlist does not depend on which reader was imported first."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[2]
    pt = root / "tests/data/megatron/legacy_tp1/iter_0000010/mp_rank_00/model_optim_rng.pt"
    code = ("import sys; from ckpt_audit.readers.registry import open_checkpoint; "
            "r = open_checkpoint(sys.argv[1], 'torch'); "
            "print('decoder.final_layernorm.weight' in r.tensors())")
    p = subprocess.run([sys.executable, "-c", code, str(pt)], capture_output=True, text=True,
                       cwd=root)
    assert p.stdout.strip() == "True", p.stderr
