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

from collections.abc import Callable

import torch

from ckpt_audit.mtp.results import ChainFigures, DepthFigures, temp_key

#: Rows of a logits matrix processed at once: bounds the float32 copies to ~64 M elements.
_CHUNK_ELEMS = 1 << 26

# Column layout of the per-depth accumulator.
PAIRS, GREEDY, LABEL_PAIRS, LABEL_OK, ENT_P, ENT_Q, CUM_GREEDY = range(7)
_FIXED = 7


def row_stats(p: torch.Tensor, q: torch.Tensor, temps: list[float]
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    """Per row of verifier logits p and draft logits q ([R, V] or [B, M, V]): argmax agreement,
    entropy of p and q (nats, temperature 1), and Σ_x min(p_T(x), q_T(x)) for each T.

    T = 0 means greedy: the acceptance probability is the argmax agreement. Rows are processed
    in chunks (float32) so that a 100k+ vocabulary never makes more than a few chunk copies.
    """
    if p.dim() == 2:
        p, q = p.unsqueeze(0), q.unsqueeze(0)
        squeeze = True
    else:
        squeeze = False
    # chunks of whole leading rows, kept as (strided) views: slices like p[:, k:] are never
    # copied into a contiguous buffer
    n, m, v = p.shape
    agree = torch.empty(n, m, dtype=torch.float64, device=p.device)
    ent_p, ent_q = torch.empty_like(agree), torch.empty_like(agree)
    betas = [torch.empty_like(agree) for _ in temps]
    step = max(1, _CHUNK_ELEMS // max(1, m * v))
    for s in range(0, n, step):
        sl = slice(s, s + step)
        pc, qc = p[sl].float(), q[sl].float()
        a = pc.argmax(-1) == qc.argmax(-1)
        agree[sl] = a
        lp, lq = torch.log_softmax(pc, -1), torch.log_softmax(qc, -1)
        pe, qe = lp.exp(), lq.exp()
        ent_p[sl] = -torch.einsum("...v,...v->...", pe, lp)
        ent_q[sl] = -torch.einsum("...v,...v->...", qe, lq)
        for j, t in enumerate(temps):
            if t == 0:
                betas[j][sl] = a
            elif t == 1:
                betas[j][sl] = torch.minimum(pe, qe).sum(-1)
            else:
                pt, qt = torch.softmax(pc / t, -1), torch.softmax(qc / t, -1)
                betas[j][sl] = torch.minimum(pt, qt).sum(-1)
    if squeeze:
        return agree[0], ent_p[0], ent_q[0], [b[0] for b in betas]
    return agree, ent_p, ent_q, betas


#: Live float32 [batch, position, vocab] tensors per position while one chunk is scored: the
#: verifier chunk, its log-softmax and probabilities, one draft chunk with its log-softmax and
#: probabilities, the draft's tempered softmax and the element-wise minimum (8), plus one
#: tempered verifier distribution per temperature.
_LIVE_COPIES = 8

#: Where logits come from: a tensor [B, L, V], or a function (start, stop) -> [B, stop-start, V]
#: that computes only those positions (so the whole [B, L, V] never exists).
LogitSource = torch.Tensor | Callable[[int, int], torch.Tensor]


def chunk_positions(max_logits_mb: float, batch: int, vocab: int, n_temps: int) -> int:
    """Positions scored at once so that the logits of one chunk and every float32 copy the
    statistics make of them (``_LIVE_COPIES`` + one per temperature, [batch, chunk, vocab])
    stay within ``max_logits_mb`` MiB; at least 1."""
    per_position = batch * vocab * 4 * (_LIVE_COPIES + n_temps)
    return max(1, int(max_logits_mb * 2**20) // per_position)


def _slicer(src: LogitSource) -> Callable[[int, int], torch.Tensor]:
    if isinstance(src, torch.Tensor):
        return lambda a, b: src[:, a:b]
    return src


class AcceptSums:
    """Sums per depth; ``add`` a batch, ``tensor`` to all-reduce, ``figures`` to report."""

    def __init__(self, n_depths: int, temps: list[float], device: torch.device) -> None:
        self.temps = list(temps)
        self.n_depths = n_depths
        width = _FIXED + 2 * len(self.temps)
        self.tensor = torch.zeros(n_depths, width, dtype=torch.float64, device=device)

    def add(self, p: LogitSource, drafts: list[LogitSource], ids: torch.Tensor,
            lengths: torch.Tensor, chunk: int | None = None) -> None:
        """One padded batch: verifier logits p [B, L, V], draft logits per depth, ids [B, L].

        One pass over the verifier positions in chunks of ``chunk`` (all at once when None):
        per chunk the verifier's log-softmax at each temperature is computed once and shared by
        every depth; depth k scores its drafts at positions j - k against verifier position j.
        Per-position statistics (float64, [B, L] each: no vocabulary axis) are then masked and
        summed exactly as a single pass over the whole batch would.
        """
        b, L = ids.shape
        nt = len(self.temps)
        dev = self.tensor.device
        n_depths = min(len(drafts), max(0, L - 1))
        stats = [_DepthRows(b, L - k, nt, dev) for k in range(1, n_depths + 1)]
        vsrc, dsrc = _slicer(p), [_slicer(q) for q in drafts]
        step = chunk or L
        for s in range(1, L, step):  # verifier position 0 pairs with no draft
            e = min(L, s + step)
            pc = vsrc(s, e).to(dev).float()
            lp = torch.log_softmax(pc, -1)
            pe = lp.exp()
            p_arg = pc.argmax(-1)
            ent_p = -torch.einsum("...v,...v->...", pe, lp)
            del lp
            tempered = {t: torch.softmax(pc / t, -1) for t in self.temps if t not in (0, 1)}
            del pc
            for k, st in enumerate(stats, start=1):
                j0 = max(s, k)  # verifier positions j0..e-1 pair with drafts j0-k..e-1-k
                if j0 >= e:
                    continue
                o = j0 - s
                qc = dsrc[k - 1](j0 - k, e - k).to(dev).float()
                sl = slice(j0 - k, e - k)
                q_arg = qc.argmax(-1)
                a = p_arg[:, o:] == q_arg
                st.agree[:, sl] = a
                st.ent_p[:, sl] = ent_p[:, o:]
                lq = torch.log_softmax(qc, -1)
                qe = lq.exp()
                st.ent_q[:, sl] = -torch.einsum("...v,...v->...", qe, lq)
                del lq
                st.draft_arg[:, sl] = q_arg
                for jt, t in enumerate(self.temps):
                    if t == 0:
                        st.betas[jt][:, sl] = a
                    elif t == 1:
                        st.betas[jt][:, sl] = torch.minimum(pe[:, o:], qe).sum(-1)
                    else:
                        qt = torch.softmax(qc / t, -1)
                        st.betas[jt][:, sl] = torch.minimum(tempered[t][:, o:], qt).sum(-1)
                        del qt
                del qc, qe
        self._accumulate(stats, ids, lengths)

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
