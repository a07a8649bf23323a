"""A real greedy draft-and-verify loop: drafts from the MTP chain, verified by the main model.

From a prompt s (the first ``prompt_tokens`` of a probe document) the loop does:

1. one verifier call on s: its argmax is the first new token x; s <- s + [x];
2. repeat: the chain drafts d_1..d_D at position i = len(s) - 2 (depth 1 reads h_i and Emb(x),
   depth j reads depth j-1's output and Emb(d_{j-1})); one verifier call on s + drafts; d_j is
   accepted while it equals the verifier's argmax at position i + j; the verifier's argmax after
   the last accepted draft is the bonus token; s grows by accepted + 1.

Each verifier call recomputes the whole sequence (no KV cache): slower, but every position's
numbers are the same computation as the teacher-forced pass, so on the model's own greedy
continuation the loop's accept/reject decision at each position it drafts at must equal the
teacher-forced agreement there (checked here and reported as ``decision_mismatches``).
Reported, named so that nobody mistakes one for the other:

- ``acceptance_at_loop_drafted_positions``: depth-1 accepts / depth-1 drafts of the loop;
- ``acceptance_at_all_positions``: teacher-forced depth-1 greedy agreement averaged over every
  position of the same continuations (the loop skips a position after each accept, and
  agreement is not independent across positions, so the two differ: docs/MTP.md, ``--speculate``);
- ``mean_acceptance_length``: tokens per drafting verifier call, bonus counted (vLLM's
  1 + accepted / drafts); ``verifier_calls_per_token``: all verifier calls (the first, draft-less
  one included) per generated token.
"""

from __future__ import annotations

from typing import Any

import torch

from ckpt_audit.mtp.modules import MtpDepth, Trunk, TrunkOutput, run_chain


def _slice_kwargs(kw: dict[str, Any], n: int) -> dict[str, Any]:
    """The trunk's block kwargs cut to the first ``n`` positions."""
    out: dict[str, Any] = {}
    for key, v in kw.items():
        if key == "position_embeddings" and isinstance(v, tuple):
            out[key] = tuple(x[:, :n] for x in v)
        elif key == "position_ids" and isinstance(v, torch.Tensor):
            out[key] = v[:, :n]
        elif key == "attention_mask" and isinstance(v, torch.Tensor):
            out[key] = v[..., :n, :n]
        else:
            out[key] = v
    return out


def _drafts(trunk: Trunk, depths: list[MtpDepth], out: TrunkOutput, seq: list[int]) -> list[int]:
    """Greedy drafts d_1..d_D made at position i = len(seq) - 2.

    ``out`` is the last verifier call, which covered at least positions 0..i; positions after i
    are cut off (attention is causal: they would not change position i anyway).
    """
    i = len(seq) - 2
    sub = TrunkOutput(out.logits, out.hidden[:, : i + 1], _slice_kwargs(out.layer_kwargs, i + 1))
    drafts: list[int] = []
    for k in range(1, len(depths) + 1):
        tokens = torch.tensor([(seq + drafts)[: i + 1 + k]], device=out.hidden.device)
        logits = run_chain(trunk, depths[:k], sub, tokens)[k - 1]
        drafts.append(int(logits[0, i].argmax()))
    return drafts


def speculate_one(trunk: Trunk, depths: list[MtpDepth], prompt: list[int], new_tokens: int,
                  device: torch.device) -> dict[str, Any]:
    """Run the loop on one prompt; return the continuation and the loop's decisions."""
    seq = list(prompt)
    out = trunk(torch.tensor([seq], device=device))
    seq.append(int(out.logits[0, -1].argmax()))
    calls, steps, accepted, drafted1, accepted1 = 1, 0, 0, 0, 0
    decisions: dict[int, bool] = {}  # depth-1 draft position i -> accepted?
    while len(seq) - len(prompt) < new_tokens:
        i = len(seq) - 2
        drafts = _drafts(trunk, depths, out, seq)
        out = trunk(torch.tensor([seq + drafts], device=device))
        calls += 1
        steps += 1
        verdicts = out.logits[0, i + 1 : i + 2 + len(drafts)].argmax(-1).tolist()
        n_ok = 0
        while n_ok < len(drafts) and drafts[n_ok] == verdicts[n_ok]:
            n_ok += 1
        decisions[i] = n_ok >= 1
        drafted1 += 1
        accepted1 += int(n_ok >= 1)
        accepted += n_ok
        seq.extend(drafts[:n_ok] + [verdicts[n_ok]])
    return {"sequence": seq, "calls": calls, "steps": steps, "accepted": accepted,
            "drafted1": drafted1, "accepted1": accepted1, "decisions": decisions}


def teacher_forced_agreement(trunk: Trunk, depths: list[MtpDepth], seq: list[int],
                             device: torch.device) -> list[bool]:
    """Depth-1 argmax agreement a(i) for i = 0..len(seq)-2 on a whole sequence."""
    ids = torch.tensor([seq], device=device)
    out = trunk(ids)
    (draft,) = run_chain(trunk, depths[:1], out, ids)
    d = draft[0, : len(seq) - 1].argmax(-1)
    v = out.logits[0, 1:].argmax(-1)
    return (d == v).tolist()


def speculate(trunk: Trunk, depths: list[MtpDepth], seqs: list[list[int]], *,
              prompt_tokens: int, new_tokens: int, device: torch.device,
              context: int | None = None) -> dict[str, float]:
    """The loop over every probe document's prompt; raw sums (reduce across ranks, then
    :func:`speculate_figures`)."""
    sums = {"sequences": 0.0, "generated_tokens": 0.0, "verifier_calls": 0.0,
            "drafting_calls": 0.0, "accepted_drafts": 0.0, "loop_drafted_positions": 0.0,
            "loop_accepted_positions": 0.0, "all_positions": 0.0, "all_positions_agree": 0.0,
            "decision_mismatches": 0.0}
    with torch.inference_mode():
        for seq in seqs:
            prompt = seq[: max(1, min(prompt_tokens, len(seq)))]
            n_new = new_tokens
            if context:
                n_new = min(n_new, context - len(prompt) - len(depths) - 1)
            if n_new < 2:
                continue
            r = speculate_one(trunk, depths, prompt, n_new, device)
            tf = teacher_forced_agreement(trunk, depths, r["sequence"], device)
            first = len(prompt) - 1  # first position whose draft targets a generated token
            region = tf[first:]
            mism = sum(1 for i, ok in r["decisions"].items() if tf[i] != ok)
            sums["sequences"] += 1
            sums["generated_tokens"] += len(r["sequence"]) - len(prompt)
            sums["verifier_calls"] += r["calls"]
            sums["drafting_calls"] += r["steps"]
            sums["accepted_drafts"] += r["accepted"]
            sums["loop_drafted_positions"] += r["drafted1"]
            sums["loop_accepted_positions"] += r["accepted1"]
            sums["all_positions"] += len(region)
            sums["all_positions_agree"] += sum(region)
            sums["decision_mismatches"] += mism
    return sums


def speculate_figures(s: dict[str, float]) -> dict[str, Any]:
    """Figures from (reduced) sums; see the module docstring for each definition."""

    def r(a: str, b: str) -> float | None:
        return s[a] / s[b] if s[b] else None

    return {
        "sequences": int(s["sequences"]),
        "generated_tokens": int(s["generated_tokens"]),
        "verifier_calls": int(s["verifier_calls"]),
        "mean_acceptance_length": (s["accepted_drafts"] + s["drafting_calls"])
        / s["drafting_calls"] if s["drafting_calls"] else None,
        "verifier_calls_per_token": r("verifier_calls", "generated_tokens"),
        "loop_drafted_positions": int(s["loop_drafted_positions"]),
        "acceptance_at_loop_drafted_positions": r("loop_accepted_positions",
                                                  "loop_drafted_positions"),
        "all_positions": int(s["all_positions"]),
        "acceptance_at_all_positions": r("all_positions_agree", "all_positions"),
        "decision_mismatches": int(s["decision_mismatches"]),
    }
