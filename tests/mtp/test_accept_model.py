"""accept on the real stories260K trunk with its trained depth-1 head (../shared/data)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ckpt_audit.mtp.engine import batches
from ckpt_audit.mtp.modules import run_chain
from tests.support.accept import accept_json as accept_run


def _untrained_ckpt(stories: Path, out: Path) -> Path:
    """The same trunk with a freshly initialised head (normal(0, 0.02) weights, unit norms)."""
    from safetensors.numpy import load_file

    from tests.support.mtp_fixture import make_fixture

    head = load_file(str(Path(__file__).parent / "data" / "stories260K_mtp1_head.safetensors"))
    rng = np.random.default_rng(5)
    fresh = {k: (np.ones_like(v) if v.ndim == 1 else
                 rng.normal(0, 0.02, v.shape).astype(np.float32)) for k, v in head.items()}
    return make_fixture(stories, out, fresh)


def test_trained_head_far_above_untrained(loaded: Any, fixture_ckpt: Path, probe_file: Path,
                                          stories_path: Path, tmp_path: Path) -> None:
    trained = accept_run(str(fixture_ckpt), str(probe_file), loaded=loaded)
    untrained = accept_run(str(_untrained_ckpt(stories_path, tmp_path / "u")), str(probe_file),
                           device="cpu")
    t, u = trained["depths"][0], untrained["depths"][0]
    assert t["pairs"] == u["pairs"] > 0
    assert t["greedy_acceptance"] > u["greedy_acceptance"] + 0.1
    assert t["greedy_acceptance"] > 3 * u["greedy_acceptance"]
    assert t["sampled_acceptance"]["1.0"] > u["sampled_acceptance"]["1.0"] + 0.1
    assert t["label_accuracy"] > u["label_accuracy"]


def test_shuffled_drafts_near_chance(loaded: Any, probe_ids: list[list[int]]) -> None:
    """Draft rows permuted across positions agree at the rate of independent argmaxes."""
    p_arg, q_arg = [], []
    with torch.inference_mode():
        for ids, lengths in batches(probe_ids, 8, torch.device("cpu")):
            out = loaded.trunk(ids)
            (q,) = run_chain(loaded.trunk, loaded.depths, out, ids)
            for b, n in enumerate(lengths.tolist()):
                p_arg.append(out.logits[b, 1:n].argmax(-1))
                q_arg.append(q[b, : n - 1].argmax(-1))
    p_all, q_all = torch.cat(p_arg), torch.cat(q_arg)
    aligned = float((p_all == q_all).double().mean())
    perm = torch.randperm(len(q_all), generator=torch.Generator().manual_seed(0))
    shuffled = float((p_all == q_all[perm]).double().mean())
    fp = torch.bincount(p_all, minlength=512).double() / len(p_all)
    fq = torch.bincount(q_all, minlength=512).double() / len(q_all)
    chance = float((fp * fq).sum())
    assert abs(shuffled - chance) < 0.03
    assert aligned > shuffled + 0.08


def test_speculate_loop_is_greedy_decoding_and_matches_teacher_forced(
        loaded: Any, probe_ids: list[list[int]]) -> None:
    from ckpt_audit.mtp.speculate import speculate_one

    trunk, depths = loaded.trunk, loaded.depths
    total_drafted = 0
    for seq in probe_ids[:4]:
        prompt = seq[:6]
        with torch.inference_mode():
            r = speculate_one(trunk, depths, prompt, 30, torch.device("cpu"))
            cont = r["sequence"]
            # independent: plain greedy decoding with the HF model, token by token
            ids = torch.tensor([prompt])
            while ids.shape[1] < len(cont):
                nxt = loaded.model(input_ids=ids).logits[0, -1].argmax()
                ids = torch.cat([ids, nxt.view(1, 1)], dim=1)
            assert ids[0].tolist() == cont
            # independent teacher-forced agreement on the continuation
            full = torch.tensor([cont])
            out = trunk(full)
            (q,) = run_chain(trunk, depths, out, full)
            agree = (q[0, :-1].argmax(-1) == out.logits[0, 1:].argmax(-1)).tolist()
        assert r["decisions"], "the loop drafted nowhere"
        for i, accepted in r["decisions"].items():
            assert accepted == agree[i], f"position {i}"
        total_drafted += len(r["decisions"])
        assert r["calls"] == 1 + r["steps"]
        assert len(cont) - len(prompt) == r["steps"] + r["accepted"] + 1
    assert total_drafted > 20


def test_speculate_figures(loaded: Any, fixture_ckpt: Path, probe_file: Path) -> None:
    res = accept_run(str(fixture_ckpt), str(probe_file), loaded=loaded, speculate=True,
                     max_docs=6, spec_prompt_tokens=4, spec_new_tokens=24)
    sp = res["speculate"]
    assert sp["decision_mismatches"] == 0
    assert sp["sequences"] == 6
    acc = sp["acceptance_at_loop_drafted_positions"]
    # generated = drafting calls x mean acceptance length + the first (draft-less) token
    drafting = sp["verifier_calls"] - sp["sequences"]
    assert sp["generated_tokens"] == pytest.approx(
        drafting * sp["mean_acceptance_length"] + sp["sequences"])
    assert sp["mean_acceptance_length"] == pytest.approx(1 + acc)  # depth 1: one draft a call
    assert sp["verifier_calls_per_token"] == pytest.approx(
        sp["verifier_calls"] / sp["generated_tokens"])
    assert sp["loop_drafted_positions"] < sp["all_positions"]


def test_grad_balance_matches_whole_probe_autograd(loaded: Any, fixture_ckpt: Path,
                                                   probe_ids: list[list[int]],
                                                   probe_file: Path) -> None:
    """Batched accumulation (batch 5) = one autograd pass over the whole probe as one batch,
    with the main loss computed by transformers itself (``labels=``)."""
    res = accept_run(str(fixture_ckpt), str(probe_file), loaded=loaded, grad_balance=True,
                     batch_size=5, mtp_lambda=0.3)
    gb = res["grad_balance"]
    model, trunk = loaded.model, loaded.trunk
    n = model.config.num_hidden_layers
    blocks = [list(trunk.layers[b].parameters()) for b in range(n)]
    params = [p for blk in blocks for p in blk]
    for p in params:
        p.requires_grad_(True)
    try:
        L = max(len(s) for s in probe_ids)
        ids = torch.zeros(len(probe_ids), L, dtype=torch.long)
        labels = torch.full_like(ids, -100)
        for b, s in enumerate(probe_ids):
            ids[b, : len(s)] = torch.tensor(s)
            labels[b, : len(s)] = torch.tensor(s)
        main = model(input_ids=ids, labels=labels).loss
        out = trunk(ids)
        (q,) = run_chain(trunk, loaded.depths, out, ids)
        mtp_labels = torch.full_like(ids, -100)
        mtp_labels[:, :-2] = labels[:, 2:]
        mtp = F.cross_entropy(q.reshape(-1, q.shape[-1]), mtp_labels.reshape(-1),
                              ignore_index=-100)
        gm = torch.autograd.grad(main, params, retain_graph=True)
        gt = torch.autograd.grad(mtp, params)
    finally:
        for p in params:
            p.requires_grad_(False)
    nm = float(torch.sqrt(sum((g.double() ** 2).sum() for g in gm)))
    nt = float(torch.sqrt(sum((g.double() ** 2).sum() for g in gt)))
    assert gb["main_grad_norm"] == pytest.approx(nm, rel=1e-4)
    assert gb["mtp_grad_norm"] == pytest.approx(nt, rel=1e-4)
    assert gb["ratio"] == pytest.approx(0.3 * nt / nm, rel=1e-4)
    assert gb["lambda"] == 0.3 and len(gb["per_block"]) == n
    per = [b["main_grad_norm"] ** 2 for b in gb["per_block"]]
    assert sum(per) == pytest.approx(gb["main_grad_norm"] ** 2, rel=1e-9)


def test_what_if_renorm(loaded: Any, fixture_ckpt: Path, probe_file: Path) -> None:
    res = accept_run(str(fixture_ckpt), str(probe_file), loaded=loaded, what_if_renorm=True,
                     final_scale=1.0, temperatures=(1.0, 0.5))
    base = res["depths"][0]
    renorm, same = res["what_if"]
    assert renorm["final_gain_ratio"] == pytest.approx(1.0)
    assert res["final_gain_ratio"] == pytest.approx(1.9017, abs=1e-3)  # DOMAIN.md section 2
    # a positive scale of the final gain scales the logits: argmax (greedy) cannot change
    assert renorm["depths"][0]["greedy_acceptance"] == base["greedy_acceptance"]
    assert renorm["depths"][0]["verifier_entropy"] > base["verifier_entropy"]
    for key in ("greedy_acceptance", "verifier_entropy", "draft_entropy"):
        assert same["depths"][0][key] == pytest.approx(base[key], rel=1e-6)
    assert same["depths"][0]["sampled_acceptance"]["0.5"] == pytest.approx(
        base["sampled_acceptance"]["0.5"], rel=1e-6)


def test_device_map_auto_on_cpu(fixture_ckpt: Path, probe_file: Path, loaded: Any) -> None:
    plain = accept_run(str(fixture_ckpt), str(probe_file), loaded=loaded, max_docs=8)
    mapped = accept_run(str(fixture_ckpt), str(probe_file), device_map="auto", max_docs=8,
                        device="cpu")
    assert mapped["depths"][0]["pairs"] == plain["depths"][0]["pairs"]
    assert mapped["depths"][0]["greedy_acceptance"] == pytest.approx(
        plain["depths"][0]["greedy_acceptance"])
