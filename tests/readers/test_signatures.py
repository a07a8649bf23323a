"""Folder signatures rule formats out, never in: every folder a reader's ``detect`` accepts (or
refuses with an error, which the user must see) fits that format's signature, so asking only the
readers whose signature fits changes no detection. Held over generated folders built from every
name the readers look for, and over every real checkpoint folder under ``tests/data``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ckpt_audit.errors import CkptAuditError
from ckpt_audit.readers.registry import READERS, candidate_formats, reader_class
from ckpt_audit.storage import location

DATA = Path(__file__).resolve().parents[1] / "data"


def _file(rel: str, text: str = "") -> Callable[[Path], None]:
    def make(root: Path) -> None:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return make


#: Everything some reader's ``detect`` looks at, with contents that pass and fail its checks.
ENTRIES: dict[str, Callable[[Path], None]] = {
    "dcp metadata": _file(".metadata", "x"),
    "torch_dist json": _file("metadata.json", json.dumps({"sharded_backend": "torch_dist"})),
    "nemo weights": _file("weights/.metadata", "x"),
    "tracker release": _file("latest_checkpointed_iteration.txt", "release"),
    "tracker 10": _file("latest_checkpointed_iteration.txt", "10"),
    "tracker junk": _file("latest_checkpointed_iteration.txt", "junk"),
    "release legacy": _file("release/mp_rank_00/model_optim_rng.pt", "x"),
    "iter 10 dist": _file("iter_0000010/.metadata", "x"),
    "iter 10 dist json": _file("iter_0000010/metadata.json",
                               json.dumps({"sharded_backend": "torch_dist"})),
    "iter 10 legacy": _file("iter_0000010/mp_rank_00_000/model_optim_rng.pt", "x"),
    "rank folder": _file("mp_rank_01/model_rng.pt", "x"),
    "rank file": _file("model_optim_rng.pt", "x"),
    "ds latest": _file("latest", "global_step1"),
    "ds latest junk": _file("latest", "../x"),
    "ds tag": _file("global_step1/mp_rank_00_model_states.pt", "x"),
    "ds zero3 tag": _file("global_step1/zero_pp_rank_0_mp_rank_00_model_states.pt", "x"),
    "ds states": _file("mp_rank_00_model_states.pt", "x"),
    "ds pipe": _file("layer_01-model_states.pt", "x"),
    "meta params": _file("params.json", "{}"),
    "meta rank": _file("consolidated.00.pth", "x"),
    "safetensors": _file("model.safetensors", "x"),
    "safetensors index": _file("model.safetensors.index.json", '{"weight_map": {}}'),
    "torch bin": _file("pytorch_model.bin", "x"),
    "torch pt": _file("model.pt", "x"),
    "torch index": _file("pytorch_model.bin.index.json", '{"weight_map": {}}'),
    "gguf": _file("model.gguf", "GGUF" + "\0" * 40),
    "notes": _file("notes.txt", "hello"),
}


def _claims(fmt: str, folder: str) -> bool:
    """Whether the reader accepts the folder, or refuses it with an error the user would see."""
    try:
        return bool(reader_class(fmt).detect(location(folder)))
    except CkptAuditError:
        return True


def _assert_signatures_hold(folder: str) -> None:
    names = frozenset(os.listdir(folder))
    for fmt, _, _, fits in READERS:
        if _claims(fmt, folder):
            assert fits(names), (fmt, sorted(names))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sets(st.sampled_from(sorted(ENTRIES)), max_size=6))
def test_every_detected_folder_fits_its_signature(chosen: set[str]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        for key in sorted(chosen):
            ENTRIES[key](Path(tmp))
        _assert_signatures_hold(tmp)


def test_every_real_checkpoint_folder_fits_its_signatures() -> None:
    folders = [str(p) for p in DATA.rglob("*") if p.is_dir()]
    assert len(folders) > 20
    for folder in folders:
        _assert_signatures_hold(folder)


def test_a_safetensors_folder_asks_only_the_safetensors_reader(tmp_path: Path) -> None:
    (tmp_path / "model.safetensors").write_bytes(b"x")
    (tmp_path / "config.json").write_text("{}")
    assert candidate_formats(location(str(tmp_path))) == ["safetensors"]


def test_files_and_remote_folders_ask_every_reader(tmp_path: Path) -> None:
    f = tmp_path / "weights.bin"
    f.write_bytes(b"x")
    everyone = [fmt for fmt, _, _, _ in READERS]
    assert candidate_formats(location(str(f))) == everyone


def test_auditing_safetensors_imports_no_other_reader(tmp_path: Path) -> None:
    from safetensors.numpy import save_file

    folder = tmp_path / "ckpt"
    folder.mkdir()
    save_file({"model.norm.weight": np.ones(8, np.float32),
               "model.embed_tokens.weight": np.zeros((4, 8), np.float32)},
              str(folder / "model.safetensors"), metadata={"format": "pt"})
    code = (
        "import sys\n"
        "from ckpt_audit.core.audit import audit_checkpoint\n"
        f"audit_checkpoint({str(folder)!r})\n"
        "print(sorted(m for m in sys.modules if m.startswith('ckpt_audit.readers.')))\n"
        "print('zipfile' in sys.modules, 'argparse' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.splitlines()
    loaded = eval(out[0])  # a printed list of module names
    readers = {m for m in loaded if m.endswith(("_reader", "_legacy", "_zip", "_metadata",
                                                 "_pickle", "_format"))}
    assert readers == {"ckpt_audit.readers.safetensors_reader",
                       "ckpt_audit.readers.safetensors_format"}
    assert out[1] == "False False"


def test_the_listing_is_matched_in_lower_case(tmp_path: Path) -> None:
    """On a case-insensitive disk a reader probing ``latest`` finds ``LATEST``: the signature
    must not rule it out first."""
    (tmp_path / "LATEST").write_text("global_step1")
    (tmp_path / "MP_RANK_00_MODEL_STATES.PT").write_bytes(b"x")
    assert {"deepspeed", "megatron-legacy"} <= set(candidate_formats(location(str(tmp_path))))
