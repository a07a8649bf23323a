"""One ``accept`` run: load, score the probe teacher-forced, optional extras, one JSON dict.

The trunk runs once per batch; its logits are the verifier and its pre-final-norm h feeds the
MTP chain (one block per depth), so the extra cost over a plain trunk forward is one block, one
head and the per-row statistics. ``--what-if-renorm``/``--final-scale`` reuse the same h: only
the final norm and head are re-applied with the final gain scaled.

Data parallel: under ``torchrun`` (``WORLD_SIZE`` > 1) each rank scores every WORLD_SIZE-th
document of the length-sorted probe and every sum is all-reduced (gloo on CPU, nccl on GPU), so
N ranks report what one would (up to float64 summation order).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch

from ckpt_audit.errors import CkptAuditError
from ckpt_audit.mtp.loader import Loaded, load
from ckpt_audit.mtp.metrics import AcceptSums, LogitSource, chunk_positions
from ckpt_audit.mtp.modules import Trunk, TrunkOutput, chain_hidden
from ckpt_audit.mtp.probe import read_probe
from ckpt_audit.mtp.results import (
    AcceptResult,
    GradBalance,
    SpeculateFigures,
    WhatIf,
    temp_key,
)


def _dist() -> tuple[int, int, Callable[[torch.Tensor], torch.Tensor] | None]:
    """(rank, world size, sum-reducer) — the reducer is None when running alone."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, None
    import torch.distributed as dist

    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() and os.environ.get(
            "CKPT_AUDIT_DIST_BACKEND", "") != "gloo" else "gloo"
        if backend == "nccl":  # one GPU per rank, before NCCL picks device 0 for everyone
            local = int(os.environ.get("LOCAL_RANK", "0"))
            torch.cuda.set_device(local % torch.cuda.device_count())
        dist.init_process_group(backend=backend)
        import atexit

        atexit.register(dist.destroy_process_group)
    backend_dev = torch.device("cuda", torch.cuda.current_device()) \
        if dist.get_backend() == "nccl" else torch.device("cpu")

    def reduce(t: torch.Tensor) -> torch.Tensor:
        x = t.detach().to(backend_dev, torch.float64).clone()
        dist.all_reduce(x, op=dist.ReduceOp.SUM)
        return x.to(t.device)

    return dist.get_rank(), world, reduce


def batches(seqs: list[list[int]], batch_size: int, device: torch.device
            ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Right-padded id batches (pad id 0, never scored: attention is causal) and lengths."""
    for s in range(0, len(seqs), batch_size):
        chunk = seqs[s : s + batch_size]
        L = max(len(x) for x in chunk)
        ids = torch.zeros(len(chunk), L, dtype=torch.long)
        for j, x in enumerate(chunk):
            ids[j, : len(x)] = torch.tensor(x)
        yield ids.to(device), torch.tensor([len(x) for x in chunk])


@contextmanager
def _progress(enabled: bool, total: int, what: str) -> Iterator[Callable[[], None]]:
    if not enabled:
        yield lambda: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    err = Console(stderr=True)
    if not err.is_terminal:  # CI logs and pipes get no bar (and no stray newline)
        yield lambda: None
        return
    with Progress("[progress.description]{task.description}", BarColumn(),
                  MofNCompleteColumn(), TimeRemainingColumn(),
                  console=err, transient=True) as bar:
        task = bar.add_task(what, total=total)
        yield lambda: bar.advance(task)


def _scales(m: Loaded, renorm: bool, final_scale: float | None) -> list[tuple[str, float]]:
    out = []
    if renorm:
        r = m.final_gain_ratio
        if r <= 0:
            raise CkptAuditError("the final gain is all zeros: cannot renormalise", m.display)
        out.append(("renorm", 1.0 / r))
    if final_scale is not None:
        if final_scale <= 0:
            raise CkptAuditError("--final-scale must be positive")
        out.append(("final-scale", float(final_scale)))
    return out


def accept_run(ckpt: str, probe: str, *, temperatures: tuple[float, ...] = (1.0,),
               max_tokens: int | None = None, max_docs: int | None = None,
               batch_size: int = 8, device: str = "auto", dtype: str = "auto",
               device_map: str | None = None, layout: str | None = None,
               concat_order: str | None = None, max_depths: int | None = None,
               what_if_renorm: bool = False, final_scale: float | None = None,
               speculate: bool = False, spec_prompt_tokens: int = 8, spec_new_tokens: int = 32,
               grad_balance: bool = False, mtp_lambda: float | None = None,
               max_logits_mb: float = 1024.0,
               progress: bool = False, loaded: Loaded | None = None) -> AcceptResult:
    """Measure MTP draft acceptance of ``ckpt`` on ``probe`` (JSON: report.accept.to_dict)."""
    if batch_size < 1:
        raise CkptAuditError("--batch-size must be at least 1")
    if not max_logits_mb > 0:
        raise CkptAuditError("--max-logits-mb must be positive")
    temps = [float(t) for t in temperatures] or [1.0]
    if any(t < 0 for t in temps):
        raise CkptAuditError("--temperature must be >= 0")
    rank, world, reduce = _dist()
    if world > 1 and device in ("auto", "cuda") and torch.cuda.is_available():
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', rank)) % torch.cuda.device_count()}"
    m = loaded or load(ckpt, layout=layout, order=concat_order, device=device, dtype=dtype,
                       device_map=device_map, max_depths=max_depths)
    context = int(getattr(m.model.config, "max_position_embeddings", 0) or 0) or None
    seqs = read_probe(probe, ckpt, m.vocab_size, max_tokens=max_tokens, max_docs=max_docs,
                      context=context)
    seqs.sort(key=len, reverse=True)
    mine = seqs[rank::world]
    scales = _scales(m, what_if_renorm, final_scale)
    sums = AcceptSums(len(m.depths), temps, m.device)
    what_if = [AcceptSums(len(m.depths), temps, m.device, share=sums) for _ in scales]
    n_batches = (len(mine) + batch_size - 1) // batch_size
    show = progress and rank == 0 and n_batches > 1
    with torch.inference_mode(), _progress(show, n_batches, "accept") as tick:
        for ids, lengths in batches(mine, batch_size, m.device):
            score_batch(m, ids, lengths, sums, max_logits_mb,
                        [(c, acc) for (_, c), acc in zip(scales, what_if, strict=True)])
            tick()
    if reduce is not None:
        sums.tensor = reduce(sums.tensor)
        for acc in what_if:
            acc.tensor = reduce(acc.tensor)
    return AcceptResult(
        checkpoint=m.display,
        layout=m.layout,
        concat_order=m.order,
        device=str(m.device),
        dtype=str(m.dtype).replace("torch.", ""),
        stored_dtype=m.stored_dtype,
        quantization=m.quantization,
        world_size=world,
        sequences=len(seqs),
        positions=sum(len(s) for s in seqs),
        batch_size=batch_size,
        max_logits_mb=float(max_logits_mb),
        positions_per_chunk=min(chunk_positions(max_logits_mb, min(batch_size, len(seqs)),
                                                _head_rows(m.trunk), len(temps), len(m.depths)),
                                len(seqs[0]) - 1),
        temperatures=tuple(temp_key(t) for t in temps),
        final_gain_ratio=m.final_gain_ratio,
        chain=sums.figures(),
        notes=tuple(m.notes),
        what_if=tuple(WhatIf(kind, c, m.final_gain_ratio * c, acc.figures())
                      for (kind, c), acc in zip(scales, what_if, strict=True)),
        speculate=_speculate(m, mine, spec_prompt_tokens, spec_new_tokens, context, reduce)
        if speculate else None,
        grad_balance=_grad_balance(m, mine, batch_size, mtp_lambda, reduce, show)
        if grad_balance else None,
    )


def score_batch(m: Loaded, ids: torch.Tensor, lengths: torch.Tensor, sums: AcceptSums,
                max_logits_mb: float, what_if: Sequence[tuple[float, AcceptSums]] = ()) -> None:
    """One batch of the scoring pass (what ``benchmarks/bench_accept.py`` times): the trunk
    once, the MTP chain, then every statistic chunk by chunk within ``max_logits_mb``; each
    ``(c, acc)`` of ``what_if`` scores the same drafts against the final gain scaled by c."""
    chunk = chunk_positions(max_logits_mb, ids.shape[0], _head_rows(m.trunk), len(sums.temps),
                            len(m.depths))
    out = m.trunk(ids, last_logits_only=True)
    drafts = _draft_sources(m, out, ids)
    sums.add(_verifier(m.trunk, out, ids), drafts, ids, lengths, chunk)
    for c, acc in what_if:
        acc.add(_scaled(m.trunk, out.hidden, c), drafts, ids, lengths, chunk)


def _head_rows(trunk: Trunk) -> int:
    """Rows of the output head: the vocabulary the logits have (may be padded past vocab)."""
    return int(trunk.head.weight.shape[0])


def _verifier(trunk: Trunk, out: TrunkOutput, ids: torch.Tensor) -> LogitSource:
    """The verifier's logits, computed chunk by chunk from the last block's output when the
    trunk gave the last position only and recomputing it reproduces the model's own logits
    there; otherwise (a model whose logits are not head(final_norm(h)), e.g. soft-capped) the
    full logits of a second forward."""
    if out.logits.shape[1] == ids.shape[1]:
        return out.logits
    mine = trunk.verifier_logits(out.hidden[:, -1:])
    if torch.allclose(mine.float(), out.logits.float(), rtol=1e-3, atol=1e-3):
        return lambda a, b: trunk.verifier_logits(out.hidden[:, a:b])
    return trunk(ids).logits


def _scaled(trunk: Trunk, hidden: torch.Tensor, c: float) -> LogitSource:
    return lambda a, b: trunk.verifier_logits(hidden[:, a:b], c)


def _draft_sources(m: Loaded, out: TrunkOutput, ids: torch.Tensor) -> list[LogitSource]:
    """Each depth's draft logits, computed per chunk of positions from its block output."""
    def source(mtp: Any, h: torch.Tensor) -> LogitSource:
        return lambda a, b: m.trunk.draft_logits(mtp, h[:, a:b])

    return [source(mtp, h) for mtp, h in
            zip(m.depths, chain_hidden(m.trunk, m.depths, out, ids), strict=True)]


def _speculate(m: Loaded, seqs: list[list[int]], prompt: int, new: int, context: int | None,
               reduce: Callable[[torch.Tensor], torch.Tensor] | None) -> SpeculateFigures:
    from ckpt_audit.mtp.speculate import speculate, speculate_figures

    sums = speculate(m.trunk, m.depths, seqs, prompt_tokens=prompt, new_tokens=new,
                     device=m.device, context=context)
    if reduce is not None:
        keys = list(sums)
        vec = reduce(torch.tensor([sums[k] for k in keys], dtype=torch.float64))
        sums = dict(zip(keys, vec.tolist(), strict=True))
    return speculate_figures(sums, prompt, new)


def mtp_lambda_from(m: Loaded, override: float | None) -> tuple[float, str]:
    """λ: ``--mtp-lambda``, else the config's ``mtp_loss_scaling_factor``, else Megatron's 0.1."""
    if override is not None:
        return float(override), "--mtp-lambda"
    for key in ("mtp_loss_scaling_factor", "mtp_loss_weight", "mtp_lambda"):
        val = m.config.get(key)
        if isinstance(val, int | float) and not isinstance(val, bool):
            return float(val), f"config {key}"
    return 0.1, "default (Megatron-core mtp_loss_scaling_factor 0.1)"


def _grad_balance(m: Loaded, seqs: list[list[int]], batch_size: int, lam: float | None,
                  reduce: Callable[[torch.Tensor], torch.Tensor] | None,
                  show: bool) -> GradBalance:
    from ckpt_audit.mtp.gradbal import grad_balance

    value, source = mtp_lambda_from(m, lam)
    bl = list(batches(seqs, batch_size, m.device))
    with _progress(show, len(bl), "grad-balance") as tick:
        return grad_balance(m.trunk, m.depths, bl, value, source, reduce=reduce,
                            progress=tick)


def accept_summary(path: str, probe: str, **kwargs: Any) -> AcceptResult:
    """What ``audit --probe`` adds to its report (rendered by report.accept.summary_dict and
    print_summary: acceptance per depth, expected tokens per step); kwargs as accept_run."""
    return accept_run(path, probe, **kwargs)
