"""Two MTP depths (the trained head reused as depth 2 at model.layers.6): chain, cumulative
figures and the draft-and-verify loop with two drafts per verifier call."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.support.accept import accept_json as accept_run


@pytest.fixture(scope="module")
def two_depths(fixture_ckpt: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from safetensors.numpy import load_file

    from tests.support.mtp_fixture import write_checkpoint

    t = load_file(str(fixture_ckpt / "model.safetensors"))
    t.update({k.replace("model.layers.5.", "model.layers.6."): v for k, v in t.items()
              if k.startswith("model.layers.5.")})
    cfg = json.loads((fixture_ckpt / "config.json").read_text())
    cfg["num_nextn_predict_layers"] = 2
    return write_checkpoint(tmp_path_factory.mktemp("two") / "ck", cfg, t)


def test_two_depth_figures(two_depths: Path, probe_file: Path,
                           probe_ids: list[list[int]]) -> None:
    res = accept_run(str(two_depths), str(probe_file), device="cpu", temperatures=(1.0,))
    d1, d2 = res["depths"]
    assert d1["pairs"] == sum(len(s) - 1 for s in probe_ids)
    assert d2["pairs"] == sum(len(s) - 2 for s in probe_ids)
    assert d2["label_pairs"] == sum(len(s) - 3 for s in probe_ids)
    assert d2["cumulative_acceptance"] <= d1["cumulative_acceptance"]
    assert d2["cumulative_acceptance"] <= d2["greedy_acceptance"]
    assert res["expected_tokens_per_step"] == pytest.approx(
        1 + d1["cumulative_acceptance"] + d2["cumulative_acceptance"])
    one = accept_run(str(two_depths), str(probe_file), device="cpu", max_depths=1)
    assert len(one["depths"]) == 1
    assert one["depths"][0]["greedy_acceptance"] == pytest.approx(d1["greedy_acceptance"])


def test_two_depth_loop_is_greedy_decoding(two_depths: Path, probe_ids: list[list[int]]) -> None:
    from ckpt_audit.mtp.loader import load
    from ckpt_audit.mtp.speculate import speculate_one

    m = load(str(two_depths), device="cpu")
    assert len(m.depths) == 2
    with torch.inference_mode():
        for seq in probe_ids[:2]:
            prompt = seq[:5]
            r = speculate_one(m.trunk, m.depths, prompt, 24, torch.device("cpu"))
            ids = torch.tensor([prompt])
            while ids.shape[1] < len(r["sequence"]):
                nxt = m.model(input_ids=ids).logits[0, -1].argmax()
                ids = torch.cat([ids, nxt.view(1, 1)], dim=1)
            assert ids[0].tolist() == r["sequence"]
            assert len(r["sequence"]) - len(prompt) == r["steps"] + r["accepted"] + 1
