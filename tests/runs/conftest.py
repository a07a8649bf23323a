"""Fixtures for the runs/trend/compare/watch/monitor tests: run folders written by real writers.

``llama_run`` is a run of ``checkpoint-N`` folders written by transformers' ``save_pretrained``
for a tiny Llama whose final gain drifts (1.0 at step 0, healthy shrink, then collapse, then
explosion), sharded so that shard-level damage can be tested. Built once per session (~5 s).
"""

from __future__ import annotations

import json
import os
import shutil

import pytest

#: step -> factor applied to the final norm's gain (γ = factor · (1 + small noise)); layer gains
#: drift by a milder factor so compare/diff see per-layer differences.
FINAL_FACTORS = {0: 1.0, 100: 0.95, 200: 0.85, 300: 0.30, 400: 2.60}
LAYER_FACTORS = {0: 1.0, 100: 0.98, 200: 0.96, 300: 0.94, 400: 0.92}
HIDDEN = 64


def tiny_llama(seed: int = 0):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(hidden_size=HIDDEN, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, vocab_size=128,
                      max_position_embeddings=64)
    torch.manual_seed(seed)
    return LlamaForCausalLM(cfg)


def set_gains(model, final: float, layer: float, seed: int, layer0_extra: float = 1.0) -> None:
    """Scale the gains in place: final norm by ``final``, layer norms by ``layer``."""
    import torch

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if not name.endswith("norm.weight"):
                continue
            noise = 1 + 0.02 * torch.randn(p.shape, generator=g) if (final, layer) != (1.0, 1.0) \
                else torch.ones(p.shape)
            f = final if name == "model.norm.weight" else layer
            if name.startswith("model.layers.0."):
                f *= layer0_extra
            p.copy_(f * noise)


def write_run(root: str, seed: int = 0, *, layer0_extra: float = 1.0,
              final_factors: dict[int, float] | None = None) -> str:
    """A run folder of ``checkpoint-N`` written with ``save_pretrained`` (2 shards each)."""
    model = tiny_llama(seed)
    for step, final in (final_factors or FINAL_FACTORS).items():
        set_gains(model, final, LAYER_FACTORS[step], seed * 1000 + step,
                  layer0_extra if step else 1.0)
        out = os.path.join(root, f"checkpoint-{step}")
        model.save_pretrained(out, max_shard_size="150KB")
        with open(os.path.join(out, "trainer_state.json"), "w") as fh:
            json.dump({"global_step": step}, fh)
    return root


@pytest.fixture(scope="session")
def llama_run_master(tmp_path_factory) -> str:
    return write_run(str(tmp_path_factory.mktemp("llama_run")))


@pytest.fixture()
def llama_run(llama_run_master, tmp_path) -> str:
    """A private copy of the session's run, free to damage."""
    dst = str(tmp_path / "run")
    shutil.copytree(llama_run_master, dst)
    return dst


@pytest.fixture(scope="session")
def llama_run_b(tmp_path_factory) -> str:
    """A second run: same seed, but layer 0's gains drift 30 % further after step 0."""
    return write_run(str(tmp_path_factory.mktemp("llama_run_b")), layer0_extra=1.3)
