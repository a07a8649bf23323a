"""The KV-cached draft-and-verify loop: token for token the uncached loop and the trunk's own
greedy decoding, with three MTP depths (so cache roll-back happens at every depth)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch


@pytest.fixture(scope="module")
def three_depths(fixture_ckpt: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The trained head as depths 1, 2 and 3 (model.layers.5, 6, 7), loaded."""
    from safetensors.numpy import load_file

    from ckpt_audit.mtp.loader import load
    from tests.support.mtp_fixture import write_checkpoint

    t = load_file(str(fixture_ckpt / "model.safetensors"))
    head = {k: v for k, v in t.items() if k.startswith("model.layers.5.")}
    for layer in (6, 7):
        t.update({k.replace("model.layers.5.", f"model.layers.{layer}."): v
                  for k, v in head.items()})
    cfg = json.loads((fixture_ckpt / "config.json").read_text())
    cfg["num_nextn_predict_layers"] = 3
    ck = write_checkpoint(tmp_path_factory.mktemp("three") / "ck", cfg, t)
    return load(str(ck), device="cpu")


@pytest.mark.parametrize("n_depths", [1, 3])
def test_cached_loop_equals_uncached_and_greedy(three_depths: Any, n_depths: int,
                                                probe_ids: list[list[int]]) -> None:
    from ckpt_audit.mtp.speculate import cacheable, speculate_cached, speculate_one

    m = three_depths
    depths = m.depths[:n_depths]
    assert cacheable(m.trunk, depths)
    accepted = 0
    with torch.inference_mode():
        for seq in probe_ids[:2]:
            prompt = seq[:7]
            cached = speculate_cached(m.trunk, depths, prompt, 16, torch.device("cpu"))
            plain = speculate_one(m.trunk, depths, prompt, 16, torch.device("cpu"))
            assert cached == plain  # tokens, calls, accepts and every decision
            ids = torch.tensor([prompt])  # independent: greedy decoding, no cache, no drafts
            while ids.shape[1] < len(cached["sequence"]):
                nxt = m.model(input_ids=ids).logits[0, -1].argmax()
                ids = torch.cat([ids, nxt.view(1, 1)], dim=1)
            assert ids[0].tolist() == cached["sequence"]
            accepted += cached["accepted"]
    assert accepted >= 2  # drafts were accepted (and rejected: roll-back exercised)

