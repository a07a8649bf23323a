"""A real greedy draft-and-verify loop: drafts from the MTP chain, verified by the main model.

From a prompt s (the first ``prompt_tokens`` of a probe document) the loop does:

1. one verifier call on s: its argmax is the first new token x; s <- s + [x];
2. repeat: the chain drafts d_1..d_D at position i = len(s) - 2 (depth 1 reads h_i and Emb(x),
   depth j reads depth j-1's output and Emb(d_{j-1})); one verifier call on s + drafts; d_j is
   accepted while it equals the verifier's argmax at position i + j; the verifier's argmax after
   the last accepted draft is the bonus token; s grows by accepted + 1.

:func:`speculate_cached` (what ``--speculate`` runs) keeps the trunk's KV cache (a transformers
``DynamicCache``) and one cache per MTP depth: each verifier call runs only the bonus token and
the drafts, and the rejected drafts' entries are cropped off afterwards. Depth k's cache holds
the positions whose inputs are final (the token t_{j+k} accepted); the entries built from
drafts are cropped after drafting. :func:`speculate_one` is the same loop without caches
(every call recomputes the whole sequence); the tests assert both give the same tokens and the
same decisions, and that the continuation is the trunk's own greedy decoding. Trunks whose
cache cannot be rolled back (linear-attention or sliding-window layers) use the uncached loop.
On the model's own greedy continuation the loop's accept/reject decision at each position it
drafts at must equal the teacher-forced agreement there (checked here and reported as
``decision_mismatches``).
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
from ckpt_audit.mtp.results import SpeculateFigures


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


class _Tally:
    """The loop's sequence and counts; :meth:`verify` applies one verifier call's verdicts."""

    def __init__(self, prompt: list[int], first: int) -> None:
        self.seq = [*prompt, first]
        self.calls, self.steps, self.accepted, self.drafted1, self.accepted1 = 1, 0, 0, 0, 0
        self.decisions: dict[int, bool] = {}  # depth-1 draft position i -> accepted?

    def verify(self, drafts: list[int], verdicts: list[int]) -> int:
        """Accept drafts while they equal the verifier's argmax, add the bonus token."""
        i = len(self.seq) - 2
        n_ok = 0
        while n_ok < len(drafts) and drafts[n_ok] == verdicts[n_ok]:
            n_ok += 1
        self.calls += 1
        self.steps += 1
        self.decisions[i] = n_ok >= 1
        self.drafted1 += 1
        self.accepted1 += int(n_ok >= 1)
        self.accepted += n_ok
        self.seq.extend(drafts[:n_ok] + [verdicts[n_ok]])
        return n_ok

    def result(self) -> dict[str, Any]:
        return {"sequence": self.seq, "calls": self.calls, "steps": self.steps,
                "accepted": self.accepted, "drafted1": self.drafted1,
                "accepted1": self.accepted1, "decisions": self.decisions}


def speculate_one(trunk: Trunk, depths: list[MtpDepth], prompt: list[int], new_tokens: int,
                  device: torch.device) -> dict[str, Any]:
    """Run the loop on one prompt; return the continuation and the loop's decisions."""
    out = trunk(torch.tensor([prompt], device=device))
    t = _Tally(prompt, int(out.logits[0, -1].argmax()))
    while len(t.seq) - len(prompt) < new_tokens:
        i = len(t.seq) - 2
        drafts = _drafts(trunk, depths, out, t.seq)
        out = trunk(torch.tensor([t.seq + drafts], device=device))
        t.verify(drafts, out.logits[0, i + 1 : i + 2 + len(drafts)].argmax(-1).tolist())
    return t.result()


def cacheable(trunk: Trunk, depths: list[MtpDepth]) -> bool:
    """True when every cache involved can be cropped back: full attention only, and each MTP
    block has an attention layer index (its entry in its own cache)."""
    types = getattr(trunk.model.config, "layer_types", None) or []
    if any(t != "full_attention" for t in types):
        return False
    cfg = trunk.model.config
    if getattr(cfg, "sliding_window", None) and getattr(cfg, "use_sliding_window", True):
        return False
    return all(_attn_index(d) is not None for d in depths)


def _attn_index(depth: MtpDepth) -> int | None:
    idx = getattr(getattr(depth.block, "self_attn", None), "layer_idx", None)
    return int(idx) if isinstance(idx, int) else None


class _DepthCache:
    """One MTP depth's KV cache and its block outputs for the positions that are final."""

    def __init__(self, depth: MtpDepth) -> None:
        from transformers import DynamicCache

        self.depth = depth
        self.index = _attn_index(depth)
        self.cache = DynamicCache()
        self.outputs: list[torch.Tensor] = []  # [1, d] per final position

    @property
    def length(self) -> int:
        return len(self.outputs)

    def run(self, trunk: Trunk, h: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Block outputs [1, q, d] for positions length..length+q-1 (h, tokens: [1, q, ...])."""
        from transformers.masking_utils import create_causal_mask

        x = self.depth.project(h, trunk.embed(tokens))
        start = self.length  # the cache holds exactly the final positions
        pos = torch.arange(start, start + x.shape[1], device=x.device)[None]
        mask = create_causal_mask(config=trunk.model.config, inputs_embeds=x,
                                  attention_mask=None, cache=self.cache, position_ids=pos,
                                  layer_idx=self.index)
        pe = trunk.base.rotary_emb(x, position_ids=pos)
        out = self.depth.block(x, attention_mask=mask, position_ids=pos,
                               position_embeddings=pe, cache=self.cache, use_cache=True)
        return out[0] if isinstance(out, tuple) else out

    def commit(self, outputs: list[torch.Tensor], n: int) -> None:
        """Keep the first ``n`` positions (``outputs`` covers 0..i): crop the cache back."""
        drop = len(outputs) - n
        if drop > 0:
            self.cache.crop(-drop)
        self.outputs = outputs[:n]


def speculate_cached(trunk: Trunk, depths: list[MtpDepth], prompt: list[int],
                     new_tokens: int, device: torch.device) -> dict[str, Any]:
    """:func:`speculate_one` with the trunk's and every MTP depth's KV cache (same result)."""
    from transformers import DynamicCache

    cache = DynamicCache(config=trunk.model.config)
    out = trunk(torch.tensor([prompt], device=device), cache)
    hidden = list(out.hidden[0].unbind(0))  # trunk h of every position in the trunk cache
    t = _Tally(prompt, int(out.logits[0, -1].argmax()))
    seq = t.seq
    chain = [_DepthCache(d) for d in depths]
    while len(seq) - len(prompt) < new_tokens:
        n = len(seq)
        i = n - 2
        drafts: list[int] = []
        prev = hidden  # h of depth k at positions 0..i: the trunk's, then depth k-1's outputs
        for k, dc in enumerate(chain, start=1):
            start = dc.length
            h = torch.stack(prev[start : i + 1])[None]
            full = seq + drafts
            toks = torch.tensor([full[start + k : i + 1 + k]], device=device)
            o = dc.run(trunk, h, toks)[0]
            drafts.append(int(trunk.head(dc.depth.final_norm(o[-1:])).argmax(-1)[0]))
            prev = dc.outputs + list(o.unbind(0))
            dc.commit(prev, n - k)  # final: positions j whose t_{j+k} is accepted, 0..n-k-1
        out = trunk(torch.tensor([[seq[-1], *drafts]], device=device), cache)
        n_ok = t.verify(drafts, out.logits[0].argmax(-1).tolist())
        hidden.extend(out.hidden[0, : n_ok + 1].unbind(0))
        if n_ok < len(drafts):  # roll the trunk's cache back over the rejected drafts
            cache.crop(n_ok - len(drafts))
    return t.result()


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
              context: int | None = None, cached: bool = True) -> dict[str, float]:
    """The loop over every probe document's prompt; raw sums (reduce across ranks, then
    :func:`speculate_figures`). ``cached``: the KV-cached loop where the caches allow it."""
    loop = speculate_cached if cached and cacheable(trunk, depths) else speculate_one
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
            r = loop(trunk, depths, prompt, n_new, device)
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


def speculate_figures(s: dict[str, float], prompt_tokens: int, new_tokens: int
                      ) -> SpeculateFigures:
    """Figures from (reduced) sums; see the module docstring for each definition."""

    def r(a: str, b: str) -> float | None:
        return s[a] / s[b] if s[b] else None

    return SpeculateFigures(
        sequences=int(s["sequences"]),
        generated_tokens=int(s["generated_tokens"]),
        verifier_calls=int(s["verifier_calls"]),
        mean_acceptance_length=(s["accepted_drafts"] + s["drafting_calls"])
        / s["drafting_calls"] if s["drafting_calls"] else None,
        verifier_calls_per_token=r("verifier_calls", "generated_tokens"),
        loop_drafted_positions=int(s["loop_drafted_positions"]),
        acceptance_at_loop_drafted_positions=r("loop_accepted_positions",
                                               "loop_drafted_positions"),
        all_positions=int(s["all_positions"]),
        acceptance_at_all_positions=r("all_positions_agree", "all_positions"),
        decision_mismatches=int(s["decision_mismatches"]),
        prompt_tokens=prompt_tokens,
        new_tokens=new_tokens,
    )
