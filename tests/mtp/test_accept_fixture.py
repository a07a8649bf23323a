"""The fixture's conversion (llama2.c -> HF Llama) and head training, on the real stories260K."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ckpt_audit.errors import FormatError
from tests.support import mtp_fixture as fixture


def test_conversion_matches_run_c(stories_path: Path, trunk_model: Any) -> None:
    """transformers' LlamaForCausalLM on the converted weights = a numpy port of run.c."""
    m = fixture.read_llama2c(stories_path)
    assert (m.dim, m.hidden_dim, m.n_layers, m.n_heads, m.n_kv_heads, m.vocab_size,
            m.seq_len) == (64, 172, 5, 8, 4, 512, 512)
    toks = [1] + torch.randint(3, 512, (40,), generator=torch.Generator().manual_seed(0)).tolist()
    ref = fixture.reference_logits(m, toks)
    with torch.no_grad():
        got = trunk_model(torch.tensor([toks])).logits[0].double().numpy()
    assert np.abs(ref - got).max() < 1e-3
    # the permutation matters: without it the logits are far off
    unpermuted = fixture.to_hf_state_dict(m)
    assert not np.allclose(unpermuted["model.layers.0.self_attn.q_proj.weight"],
                           m.weights["wq"][0])
    gamma = m.weights["rms_final_weight"]
    assert np.linalg.norm(gamma) / np.sqrt(64) == pytest.approx(1.90, abs=0.01)


def test_truncated_llama2c_is_a_format_error(stories_path: Path, tmp_path: Path) -> None:
    bad = tmp_path / "cut.bin"
    bad.write_bytes(stories_path.read_bytes()[:5000])
    with pytest.raises(FormatError, match="truncated"):
        fixture.read_llama2c(bad)


def test_training_lowers_the_mtp_loss(trunk_model: Any) -> None:
    """A few seeded steps of the fixture's trainer lower the depth-1 loss on its data."""
    from ckpt_audit.mtp.modules import Trunk, run_chain

    seqs = fixture.sample_sequences(trunk_model, 16, 48, seed=7)
    trunk = Trunk(trunk_model)

    def loss(mtp: Any) -> float:
        with torch.no_grad():
            out = trunk(seqs)
            (d,) = run_chain(trunk, [mtp], out, seqs)
            return float(F.cross_entropy(d[:, :-2].reshape(-1, 512), seqs[:, 2:].reshape(-1)))

    before = loss(fixture.new_mtp_depth(trunk_model, seed=7))
    after = loss(fixture.train_mtp_head(trunk_model, seqs, steps=40, batch=8, seed=7))
    assert after < before - 0.5
