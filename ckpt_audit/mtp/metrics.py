"""Teacher-forced acceptance figures, accumulated as exact sums and counts.

Alignment (docs/MTP.md has the table): for a sequence t_0..t_{T-1}, the depth-k draft made at
position i predicts t_{i+k+1} and pairs with the verifier (main model) at position i+k. It needs
the input token t_{i+k}, so i runs over 0..T-1-k: T-k pairs (T-1 at depth 1). Label accuracy
needs the label t_{i+k+1} itself: i over 0..T-2-k, T-k-1 positions.

Everything is kept as float64 sums and integer-valued counts in one tensor per accumulator, so
batches and data-parallel ranks combine by plain addition (never averages of averages) and the
final figures are ratios of totals.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from ckpt_audit.mtp.results import ChainFigures, DepthFigures, temp_key

# Column layout of the per-depth accumulator.
PAIRS, GREEDY, LABEL_PAIRS, LABEL_OK, ENT_P, ENT_Q, CUM_GREEDY = range(7)
_FIXED = 7

#: Elements of one [B, w, V] sub-block of logits whose statistics are computed together (4 MiB
#: float32): its buffers stay in the last-level cache between passes, while the operations stay
#: few and large (Python's cost per operation, and the threads' synchronisation after each one,
#: a few percent of the arithmetic; 1 MiB sub-blocks were 1.5x slower on 2 shared cores).
SUB_ELEMS = 1 << 20

#: Block of the two-stage argmax: torch's argmax over a long row is an unvectorised scan, the
#: maximum of 128-element blocks is not.
_ARGMAX_BLOCK = 128


def max_argmax(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x.amax(-1), x.argmax(-1))`` exactly, first index on ties, NaN counting as the maximum:
    for long rows as the maximum of each 128-element block, the first block holding the largest,
    then the first index inside it."""
    v = x.shape[-1]
    n = v // _ARGMAX_BLOCK
    if n < 32:
        return x.max(-1)
    w = _ARGMAX_BLOCK
    blocks = x[..., : n * w].unflatten(-1, (n, w))
    first = blocks.amax(-1).argmax(-1)
    block = blocks.gather(-2, first[..., None, None].expand(*first.shape, 1, w)).squeeze(-2)
    inner = block.argmax(-1)
    val, idx = block.gather(-1, inner.unsqueeze(-1)).squeeze(-1), first * w + inner
    if n * w < v:  # the tail wins only when strictly larger (or the first NaN)
        tv, ti = x[..., n * w :].max(-1)
        take = (tv > val) | (tv.isnan() & ~val.isnan())
        val, idx = torch.where(take, tv, val), torch.where(take, ti + n * w, idx)
    return val, idx


class _Scratch:
    """Float32 buffers for the sub-blocks, reused from one to the next: on CPU a fresh tensor of
    a few MiB costs page faults on every allocation, as much as a pass over it."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self._bufs: dict[str, torch.Tensor] = {}

    def shaped(self, shape: tuple[int, ...]) -> Callable[[str], torch.Tensor]:
        """``buf(name)``: the buffer ``name`` as a contiguous float32 tensor of ``shape``."""
        n = math.prod(shape)

        def buf(name: str) -> torch.Tensor:
            b = self._bufs.get(name)
            if b is None or b.numel() < n:
                b = self._bufs[name] = torch.empty(n, dtype=torch.float32, device=self.device)
            return b[:n].view(shape)

        return buf


class _Dist:
    """What the statistics need of one sub-block of logits x [B, w, V]: the argmax, the entropy
    at T = 1 and the distribution p_T for every T > 0 (T = 1 always), in float32.

    With m = max x and d = x - m (≤ 0, 0 at the argmax), s = Σ exp(d), p = exp(d) / s and the
    entropy is H = log s - Σ p·d: both terms non-negative (no cancellation), one exp an
    element for p and H together. ``role`` names the buffers p and p_T live in (a verifier's
    stay alive while the depths are scored); x (a cast), d and the products share one set."""

    __slots__ = ("arg", "entropy", "probs")

    def __init__(self, x: torch.Tensor, temps: list[float], buf: Callable[[str], torch.Tensor],
                 role: str) -> None:
        if x.dtype != torch.float32:
            x = buf("x").copy_(x)
        m, self.arg = max_argmax(x)
        d = torch.sub(x, m.unsqueeze(-1), out=buf("d"))
        p = torch.exp(d, out=buf(role))
        s = p.sum(-1, keepdim=True)
        p.div_(s)
        self.entropy = s.squeeze(-1).log_().sub_(torch.mul(p, d, out=buf("t")).sum(-1))
        self.probs = {1.0: p}
        for t in temps:
            if t not in (0, 1) and t not in self.probs:
                pt = torch.div(d, t, out=buf(f"{role}{t}")).exp_()
                self.probs[t] = pt.div_(pt.sum(-1, keepdim=True))


def _betas(ver: _Dist, o: int, q: _Dist, agree: torch.Tensor, temps: list[float]
           ) -> list[torch.Tensor]:
    """Σ_x min(p_T(x), q_T(x)) per row for every T, verifier rows from ``o`` on (T = 0: the
    argmax agreement). Overwrites q's distributions (used once)."""
    out = []
    for t in temps:
        if t == 0:
            out.append(agree)
        else:
            qt = q.probs[t]
            out.append(torch.minimum(ver.probs[t][:, o:], qt, out=qt).sum(-1))
    return out


def row_stats(p: torch.Tensor, q: torch.Tensor, temps: list[float]
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    """Per row of verifier logits p and draft logits q ([R, V] or [B, M, V]): argmax agreement,
    entropy of p and q (nats, temperature 1), and Σ_x min(p_T(x), q_T(x)) for each T (float64).

    T = 0 means greedy: the acceptance probability is the argmax agreement. The same arithmetic
    as :meth:`AcceptSums.add`, on the whole input at once."""
    squeeze = p.dim() == 2
    if squeeze:
        p, q = p.unsqueeze(0), q.unsqueeze(0)
    buf = _Scratch(p.device).shaped(tuple(p.shape))
    ver, dr = _Dist(p, temps, buf, "p"), _Dist(q, temps, buf, "q")
    agree = ver.arg == dr.arg
    betas = [b.double() for b in _betas(ver, 0, dr, agree, temps)]
    out = agree.double(), ver.entropy.double(), dr.entropy.double()
    if squeeze:
        return out[0][0], out[1][0], out[2][0], [b[0] for b in betas]
    return *out, betas


#: Where logits come from: a tensor [B, L, V], or a function (start, stop) -> [B, stop-start, V]
#: that computes only those positions (so the whole [B, L, V] never exists).
LogitSource = torch.Tensor | Callable[[int, int], torch.Tensor]


def scratch_copies(n_temps: int) -> int:
    """float32 [B, w, V] buffers the statistics of a sub-block use (``_Dist``): a cast of the
    logits, d, a product, and p plus one p_T per temperature for the verifier and for a draft
    (T = 0 and 1 counted too: an upper bound)."""
    return 5 + 2 * n_temps


def sub_positions(batch: int, vocab: int) -> int:
    """Positions of a sub-block: ``SUB_ELEMS`` elements of [batch, w, vocab], at least 1."""
    return max(1, SUB_ELEMS // max(1, batch * vocab))


def chunk_positions(max_logits_mb: float, batch: int, vocab: int, n_temps: int,
                    n_depths: int = 1) -> int:
    """Positions scored at once (a chunk) so that what the statistics hold stays within
    ``max_logits_mb`` MiB: the logits of the chunk, the verifier's and one per depth
    ((1 + n_depths) [batch, chunk, vocab], 4 bytes an element), plus ``scratch_copies``
    float32 [batch, w, vocab] for the sub-block of w = min(chunk, ``sub_positions``) positions
    being scored; at least 1."""
    budget = int(max_logits_mb * 2**20) // (batch * vocab * 4)  # in [batch, 1, vocab] tensors
    k, w, live = scratch_copies(n_temps), sub_positions(batch, vocab), 1 + n_depths
    small = budget // (live + k)  # chunk no longer than a sub-block
    if small <= w:
        return max(1, small)
    return (budget - k * w) // live


def _slicer(src: LogitSource) -> Callable[[int, int], torch.Tensor]:
    if isinstance(src, torch.Tensor):
        return lambda a, b: src[:, a:b]
    return src


class AcceptSums:
    """Sums per depth; ``add`` a batch, ``tensor`` to all-reduce, ``figures`` to report."""

    def __init__(self, n_depths: int, temps: list[float], device: torch.device,
                 share: AcceptSums | None = None) -> None:
        """``share``: an accumulator scored in the same loop whose scratch buffers to reuse."""
        self.temps = list(temps)
        self.n_depths = n_depths
        width = _FIXED + 2 * len(self.temps)
        self.tensor = torch.zeros(n_depths, width, dtype=torch.float64, device=device)
        self._scratch: _Scratch = share._scratch if share is not None else _Scratch(device)

    def add(self, p: LogitSource, drafts: list[LogitSource], ids: torch.Tensor,
            lengths: torch.Tensor, chunk: int | None = None) -> None:
        """One padded batch: verifier logits p [B, L, V], draft logits per depth, ids [B, L].

        The verifier positions are taken in chunks of ``chunk`` (all at once when None): the
        chunk's verifier logits and, per depth, the drafts paired with them (depth k: positions
        j - k against verifier position j) are computed once, then scored sub-block by
        sub-block (``sub_positions``): per sub-block the verifier's distributions (one per
        temperature) are computed once and shared by every depth. Per-position statistics
        (float64, [B, L] each: no vocabulary axis) are then masked and summed exactly as a
        single pass over the whole batch would.
        """
        b, L = ids.shape
        temps = self.temps
        dev = self.tensor.device
        n_depths = min(len(drafts), max(0, L - 1))
        stats = [_DepthRows(b, L - k, len(temps), dev) for k in range(1, n_depths + 1)]
        vsrc, dsrc = _slicer(p), [_slicer(q) for q in drafts]
        step = chunk or L
        for s in range(1, L, step):  # verifier position 0 pairs with no draft
            e = min(L, s + step)
            # depth k: verifier positions j0..e-1 pair with drafts j0-k..e-1-k
            self._chunk(stats, s, vsrc(s, e),
                        [(k, j0, dsrc[k - 1](j0 - k, e - k))
                         for k, j0 in ((k, max(s, k)) for k in range(1, n_depths + 1))
                         if j0 < e])
        self._accumulate(stats, ids, lengths)

    def _chunk(self, stats: list[_DepthRows], s: int, pc: torch.Tensor,
               qcs: list[tuple[int, int, torch.Tensor]]) -> None:
        """Score one chunk: verifier logits ``pc`` for positions s.., and per depth k its draft
        logits ``qc`` paired with verifier positions j0... The logits are referenced from this
        frame only, so they are freed on return, before the next chunk's exist."""
        b, v = pc.shape[0], pc.shape[-1]
        e = s + pc.shape[1]
        temps, dev = self.temps, self.tensor.device
        w = sub_positions(b, v)
        for u in range(s, e, w):
            ue = min(e, u + w)
            ver = _Dist(pc[:, u - s : ue - s].to(dev), temps,
                        self._scratch.shaped((b, ue - u, v)), "p")
            for k, j0, qc in qcs:
                a0 = max(u, j0)
                if a0 < ue:
                    q = _Dist(qc[:, a0 - j0 : ue - j0].to(dev), temps,
                              self._scratch.shaped((b, ue - a0, v)), "q")
                    stats[k - 1].put(slice(a0 - k, ue - k), ver, a0 - u, q, temps)

    def _accumulate(self, stats: list[_DepthRows], ids: torch.Tensor,
                    lengths: torch.Tensor) -> None:
        b, L = ids.shape
        nt = len(self.temps)
        dev = self.tensor.device
        cum_g = torch.ones(b, L, dtype=torch.float64, device=dev)
        cum_s = torch.ones(nt, b, L, dtype=torch.float64, device=dev)
        lengths = lengths.to(dev)
        for k, st in enumerate(stats, start=1):
            m = L - k
            pos = torch.arange(m, device=dev)
            valid = pos[None, :] < (lengths[:, None] - k)  # i <= T-1-k
            lab_valid = pos[None, :] < (lengths[:, None] - k - 1)  # i <= T-2-k

            # computed on every position (pads included: no gather copies), masked after
            def keep(x: torch.Tensor, valid: torch.Tensor = valid) -> torch.Tensor:
                return torch.where(valid, x, 0.0)  # not x * mask: a NaN pad row stays out

            full_a = keep(st.agree)
            cum_g[:, :m] *= full_a
            row = self.tensor[k - 1]
            row[PAIRS] += valid.sum()
            row[GREEDY] += full_a.sum()
            row[ENT_P] += keep(st.ent_p).sum()
            row[ENT_Q] += keep(st.ent_q).sum()
            row[CUM_GREEDY] += keep(cum_g[:, :m]).sum()
            for j in range(nt):
                full_b = keep(st.betas[j])
                cum_s[j, :, :m] *= full_b
                row[_FIXED + j] += full_b.sum()
                row[_FIXED + nt + j] += keep(cum_s[j, :, :m]).sum()
            if m > 1:
                labels = ids[:, k + 1 :].to(dev)
                ok = (st.draft_arg[:, : m - 1] == labels) & lab_valid[:, : m - 1]
                row[LABEL_PAIRS] += lab_valid.sum()
                row[LABEL_OK] += ok.sum()

    def figures(self) -> ChainFigures:
        """Per-depth figures, expected tokens per verifier step (greedy) and per temperature."""
        t = self.tensor.detach().cpu().tolist()
        nt = len(self.temps)
        keys = [temp_key(x) for x in self.temps]
        depths: list[DepthFigures] = []
        etps, etps_s = 1.0, dict.fromkeys(keys, 1.0)

        def ratio(x: float, d: float) -> float | None:
            return x / d if d else None

        for k, row in enumerate(t, start=1):
            n = row[PAIRS]
            entry = DepthFigures(
                depth=k,
                pairs=int(n),
                greedy_acceptance=ratio(row[GREEDY], n),
                sampled_acceptance={key: ratio(row[_FIXED + j], n) for j, key in enumerate(keys)},
                label_accuracy=ratio(row[LABEL_OK], row[LABEL_PAIRS]),
                label_pairs=int(row[LABEL_PAIRS]),
                verifier_entropy=ratio(row[ENT_P], n),
                draft_entropy=ratio(row[ENT_Q], n),
                cumulative_acceptance=ratio(row[CUM_GREEDY], n),
                cumulative_sampled_acceptance={key: ratio(row[_FIXED + nt + j], n)
                                               for j, key in enumerate(keys)},
            )
            depths.append(entry)
            etps += entry.cumulative_acceptance or 0.0
            for key, v in entry.cumulative_sampled_acceptance.items():
                etps_s[key] += v or 0.0
        return ChainFigures(tuple(depths), etps, etps_s)


class _DepthRows:
    """Per-position statistics of one depth over one batch ([B, m] each, m = L - k)."""

    def __init__(self, b: int, m: int, nt: int, dev: torch.device) -> None:
        def z() -> torch.Tensor:
            return torch.zeros(b, m, dtype=torch.float64, device=dev)

        self.agree, self.ent_p, self.ent_q = z(), z(), z()
        self.betas = [z() for _ in range(nt)]
        self.draft_arg = torch.full((b, m), -1, dtype=torch.long, device=dev)

    def put(self, sl: slice, ver: _Dist, o: int, q: _Dist, temps: list[float]) -> None:
        """Draft positions ``sl`` scored against verifier rows ``o:`` of ``ver``."""
        agree = ver.arg[:, o:] == q.arg
        self.agree[:, sl] = agree
        self.ent_p[:, sl] = ver.entropy[:, o:]
        self.ent_q[:, sl] = q.entropy
        self.draft_arg[:, sl] = q.arg
        for dst, beta in zip(self.betas, _betas(ver, o, q, agree, temps), strict=True):
            dst[:, sl] = beta
