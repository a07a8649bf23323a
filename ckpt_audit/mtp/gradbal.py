"""Gradient balance: how hard λ×(MTP loss) pulls on the trunk compared with the main loss.

Definitions (issue 4, item 7):

- L_main = mean token cross-entropy of t_{i+1} from position i over every scored token of the
  whole probe (T-1 per sequence);
- L_k = mean cross-entropy of t_{i+k+1} from the depth-k draft at position i (T-k-1 per
  sequence); L_MTP = (1/D) Σ_k L_k (Megatron divides ``mtp_loss_scaling_factor`` by the number
  of depths; DeepSeek-V3 writes λ/D Σ_k L_k);
- the trunk = every parameter of the N main decoder blocks (not the embedding, not the final
  norm, not the head); ratio = λ·‖∇L_MTP‖₂ / ‖∇L_main‖₂, in total and per block.

Batches: each batch contributes (its sum of token losses) / (token count of the whole probe),
so the gradients accumulated over batches are exactly the gradients of the whole-probe means.
Across data-parallel ranks the token counts and the gradient buffers are summed.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from ckpt_audit.mtp.modules import MtpDepth, Trunk, run_chain
from ckpt_audit.mtp.results import BlockGrad, GradBalance

Batches = list[tuple[torch.Tensor, torch.Tensor]]  # (ids [B, L], lengths [B])


def loss_sums(trunk: Trunk, depths: list[MtpDepth], ids: torch.Tensor, lengths: torch.Tensor
              ) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Sum of main-loss token CEs and, per depth, the sum of its token CEs, for one batch."""
    out = trunk(ids)
    drafts = run_chain(trunk, depths, out, ids)
    L = ids.shape[1]
    pos = torch.arange(L, device=ids.device)[None, :]
    lengths = lengths.to(ids.device)[:, None]
    ignore = -100

    def ce(logits: torch.Tensor, k: int) -> torch.Tensor:
        # position i predicts t_{i+k}; valid for i <= T-1-k
        lab = torch.full_like(ids, ignore)
        lab[:, : L - k] = ids[:, k:]
        lab[pos >= lengths - k] = ignore
        return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]),
                               lab.to(logits.device).reshape(-1), ignore_index=ignore,
                               reduction="sum")

    main = ce(out.logits, 1)
    return main, [ce(d, k + 2) for k, d in enumerate(drafts)]  # depth k+1 targets t_{i+k+2}


def grad_balance(trunk: Trunk, depths: list[MtpDepth], batches: Batches, lam: float,
                 lam_source: str = "",
                 reduce: Callable[[torch.Tensor], torch.Tensor] | None = None,
                 progress: Callable[[], None] | None = None) -> GradBalance:
    """Gradient norms of L_main and λ·L_MTP on the trunk's blocks; see the module docstring."""
    n = int(trunk.model.config.num_hidden_layers)
    blocks = [list(trunk.layers[b].parameters()) for b in range(n)]
    params = [p for blk in blocks for p in blk]
    saved = {p: p.requires_grad for p in trunk.model.parameters()}
    for p in trunk.model.parameters():
        p.requires_grad_(False)
    for p in params:
        p.requires_grad_(True)
    D = len(depths)
    counts = torch.zeros(1 + D, dtype=torch.float64)
    for _ids, lengths in batches:
        counts[0] += (lengths - 1).clamp(min=0).sum()
        for k in range(1, D + 1):
            counts[k] += (lengths - 1 - k).clamp(min=0).sum()
    if reduce is not None:
        counts = reduce(counts)
    g_main = [torch.zeros(p.shape, dtype=torch.float64, device=p.device) for p in params]
    g_mtp = [torch.zeros_like(g) for g in g_main]
    try:
        for ids, lengths in batches:
            main, per_depth = loss_sums(trunk, depths, ids, lengths)
            lm = main / counts[0].item()
            lt = torch.zeros((), device=main.device)
            for k, s in enumerate(per_depth):
                if counts[k + 1] > 0:
                    lt = lt + s / counts[k + 1].item() / D
            gm = torch.autograd.grad(lm, params, retain_graph=True, allow_unused=True)
            gt: tuple[torch.Tensor | None, ...] = (
                torch.autograd.grad(lt, params, allow_unused=True) if lt.requires_grad
                else (None,) * len(params))
            for acc, g in zip(g_main, gm, strict=True):
                if g is not None:
                    acc += g.double()
            for acc, gg in zip(g_mtp, gt, strict=True):
                if gg is not None:
                    acc += gg.double()
            if progress:
                progress()
    finally:
        for p, rg in saved.items():
            p.requires_grad_(rg)
    if reduce is not None:
        flat = reduce(torch.cat([g.flatten().cpu() for g in g_main + g_mtp]))
        sizes = [g.numel() for g in g_main + g_mtp]
        parts = list(torch.split(flat, sizes))
        g_main, g_mtp = parts[: len(params)], parts[len(params) :]
    per_block: list[BlockGrad] = []
    i = 0
    tot_m = tot_t = 0.0
    for b, blk in enumerate(blocks):
        sm = sum(float(g_main[j].pow(2).sum()) for j in range(i, i + len(blk)))
        st = sum(float(g_mtp[j].pow(2).sum()) for j in range(i, i + len(blk)))
        i += len(blk)
        tot_m, tot_t = tot_m + sm, tot_t + st
        per_block.append(BlockGrad(b, math.sqrt(sm), math.sqrt(st),
                                   lam * math.sqrt(st) / math.sqrt(sm) if sm else None))
    return GradBalance(lam, math.sqrt(tot_m), math.sqrt(tot_t),
                       lam * math.sqrt(tot_t) / math.sqrt(tot_m) if tot_m else None,
                       tuple(per_block), lam_source)
