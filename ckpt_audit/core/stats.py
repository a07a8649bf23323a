"""Per-gain statistics in float64, with exactly rounded sums.

Each γ_eff channel is widened to float64; squares of float32 values are exact in float64, and
``math.fsum`` rounds the sum of squares once, so ‖γ_eff‖₂ is correct to the last bit of float64
for every stored dtype up to F32. Definitions (docs/METRICS.md):

- ``norm`` = ‖γ_eff‖₂ = sqrt(Σ γ_i²); ``ratio`` = norm / √n (= RMS of γ_eff);
- ``mean``, ``std`` (population, ddof = 0), ``min``, ``max`` over finite channels;
- ``nonfinite`` = number of NaN/±inf channels (then norm and ratio are NaN);
- ``near_zero`` = fraction of channels with |γ_i| < threshold;
- ``extreme`` = the channels farthest from the init value 1, as (index, γ_i);
- ``spread`` = std / RMS over finite channels (0 at the all-ones init; NaN when RMS is 0 or there
  is no finite channel), and ``negative`` = fraction of channels with γ_i < 0: the channel signals.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from ckpt_audit.records import Convention, GainStats

EXTREME_COUNT = 5
#: above this magnitude squares would overflow float64: statistics are computed scaled
_HUGE = 1e150


def _scale(finite: np.ndarray) -> float:
    """1, or for F64 gains near the float64 limit (1e200), whose squares would overflow, a power
    of two (exact) to divide by first: the figures stay right and numpy never warns."""
    top_abs = float(np.abs(finite).max()) if finite.size else 0.0
    return 2.0 ** math.frexp(top_abs)[1] if top_abs > _HUGE else 1.0


def effective_gain(values: np.ndarray, convention: Convention) -> np.ndarray:
    """γ_eff in float64: the stored values, plus one for the offset convention."""
    g = np.asarray(values, dtype=np.float64).reshape(-1)
    if convention is Convention.OFFSET:
        g = g + 1.0
    return g


def gain_stats(values: np.ndarray, convention: Convention, near_zero: float = 0.01) -> GainStats:
    """Statistics of one gain (see the module docstring for each definition)."""
    g = effective_gain(values, convention)
    n = int(g.size)
    if n == 0:
        nan = float("nan")
        return GainStats(0, nan, nan, nan, nan, nan, nan, 0, 0.0, (), nan, 0.0)
    finite = np.isfinite(g)
    nonfinite = int(n - int(finite.sum()))
    gf = g[finite]
    scale = _scale(gf)
    if nonfinite:
        norm = ratio = float("nan")
    else:
        gs = g / scale
        norm = math.sqrt(math.fsum((gs * gs).tolist())) * scale
        ratio = norm / math.sqrt(n)
    if gf.size:
        mean = math.fsum((gf / scale).tolist()) / gf.size * scale
        # two-pass population variance around the exactly rounded mean (numpy's pairwise sum)
        std = math.sqrt(float(np.mean(((gf - mean) / scale) ** 2))) * scale
        lo, hi = float(gf.min()), float(gf.max())
    else:
        mean = std = lo = hi = float("nan")
    near = float(np.count_nonzero(np.abs(gf) < near_zero)) / n
    negative = float(np.count_nonzero(gf < 0)) / n
    extreme = _extreme(g, -np.where(finite, np.abs(g - 1.0), np.inf))
    return GainStats(n, norm, ratio, lo, hi, mean, std, nonfinite, near, extreme,
                     channel_spread(std, gf), negative)


def channel_spread(std: float, finite: np.ndarray) -> float:
    """std / RMS of the finite channels ``finite`` (NaN when their RMS is 0 or there are none)."""
    if not finite.size:
        return float("nan")
    scale = _scale(finite)
    scaled = finite / scale
    rms = math.sqrt(math.fsum((scaled * scaled).tolist()) / finite.size) * scale
    return std / rms if rms > 0 else float("nan")


def _extreme(g: np.ndarray, neg_dev: np.ndarray) -> tuple[tuple[int, float], ...]:
    """The :data:`EXTREME_COUNT` channels farthest from 1 (``neg_dev`` = −|γ − 1|, −inf where
    not finite), farthest first, ties broken by the lower index (as the torch backend does)."""
    n = g.size
    k = min(EXTREME_COUNT, n)
    if n > k:
        cut = np.partition(neg_dev, k - 1)[k - 1]  # the k-th smallest: max of the k smallest
        top = np.flatnonzero(neg_dev <= cut)
        if top.size > k:  # ties at the cut: the lowest indices among them
            better = np.flatnonzero(neg_dev < cut)
            top = np.concatenate([better, np.flatnonzero(neg_dev == cut)[: k - better.size]])
    else:
        top = np.arange(n)
    rows = sorted(zip(neg_dev[top].tolist(), top.tolist(), g[top].tolist(), strict=True))
    return tuple((i, v) for _, i, v in rows)


def _segment_sums(x: np.ndarray, sizes: np.ndarray, starts: np.ndarray,
                  abs_x: np.ndarray | None = None) -> list[float]:
    """The exactly rounded sum of each segment of ``x`` (``math.fsum``'s figure, to the bit).
    ``abs_x`` is ``|x|`` when the caller has it (``x`` itself when no element is negative).

    A segment is scaled by the power of two 2**k that brings Σ|x| under 2**51. If every scaled
    value is then an integer, every partial sum is an integer below 2**53, so any order of
    float64 additions is exact and one ``np.add.reduceat`` gives the exact sum (its own correct
    rounding). Other segments (wide dynamic range: float32 squares, mostly) use ``math.fsum``.
    """
    sums = np.add.reduceat(x, starts)
    bound = sums if abs_x is x else np.add.reduceat(np.abs(x) if abs_x is None else abs_x, starts)
    exp = np.frexp(bound)[1]
    scaled = x * np.repeat(np.ldexp(1.0, 51 - np.clip(exp, -900, 1100)), sizes)
    integral = np.logical_and.reduceat(scaled == np.rint(scaled), starts)
    exact = integral & (exp <= 51) & (exp > -900) & np.isfinite(bound) & (sums != 0)
    out = sums.tolist()
    for i in np.flatnonzero(~exact).tolist():
        out[i] = math.fsum(x[starts[i]:starts[i] + sizes[i]].tolist())
    return out


#: Elements per vectorised batch: big enough to amortise numpy's per-call cost (a dozen calls a
#: batch, two dozen for its sums), small enough for the batch's float64 temporaries (256 KiB
#: each) to stay near a core's L2. Measured in fresh processes (medians of 5 interleaved runs,
#: ms) on DeepSeek-V3's 252 BF16 gains and on 252 random F32 gains of 7168 channels (whose
#: exact sums take ``math.fsum`` per gain, which wants the batch still in cache): 8192: 58 /
#: 233, 32768: 27 / 238, 65536: 30 / 278. (An earlier round chose 8192 from a cachegrind run
#: with a simulated 1 MiB last level; timed on a busy machine in one warm interpreter, 8192 was
#: again the faster for F32 gains: the choice trades a little there for a lot on BF16.)
BATCH = 32768


def gain_stats_many(values: Mapping[str, np.ndarray], conventions: Mapping[str, Convention],
                    near_zero: float = 0.01) -> dict[str, GainStats]:
    """:func:`gain_stats` of many gains, vectorised over batches of gains, with the very same
    figures (every sum exactly rounded, std by numpy's pairwise mean, the same extreme channels).
    Empty gains, gains with a non-finite channel and huge F64 gains (see :func:`_scale`) go
    through :func:`gain_stats` itself."""
    out: dict[str, GainStats] = {}
    batch: dict[str, tuple[np.ndarray, float, float]] = {}
    size = 0
    for name, v in values.items():
        g = effective_gain(v, conventions[name])
        # numpy's min and max propagate NaN (and every comparison with NaN is False), so these
        # two find a non-finite or huge channel without a pass of their own
        lo, hi = (float(g.min()), float(g.max())) if g.size else (math.nan, math.nan)
        if not (-lo <= _HUGE and hi <= _HUGE):
            out[name] = gain_stats(v, conventions[name], near_zero)
            continue
        batch[name] = (g, lo, hi)
        size += g.size
        if size >= BATCH:
            out.update(_batch_stats(batch, near_zero))
            batch, size = {}, 0
    if batch:
        out.update(_batch_stats(batch, near_zero))
    return {name: out[name] for name in values}


def _segment_counts(mask: np.ndarray, starts: np.ndarray, stops: np.ndarray) -> list[int]:
    """How many elements of each segment ``mask`` holds True: from the positions of the (few)
    True elements, with no int64 copy of the whole mask."""
    at = np.flatnonzero(mask)
    return (np.searchsorted(at, stops) - np.searchsorted(at, starts)).tolist()


def _batch_stats(gains: dict[str, tuple[np.ndarray, float, float]],
                 near_zero: float) -> dict[str, GainStats]:
    """The statistics of finite, non-empty effective gains (each with its min and max), in one
    numpy pass over the batch; temporaries are reused in place where a figure allows."""
    names = list(gains)
    sizes = np.array([g.size for g, _, _ in gains.values()])
    stops = np.cumsum(sizes)
    starts = stops - sizes
    g_all = np.concatenate([g for g, _, _ in gains.values()])
    work = np.square(g_all)
    sum_sq = _segment_sums(work, sizes, starts, work)
    np.abs(g_all, out=work)
    means = (np.array(_segment_sums(g_all, sizes, starts, work)) / sizes).tolist()
    near = _segment_counts(work < near_zero, starts, stops)
    negative = _segment_counts(g_all < 0, starts, stops)
    dev2 = np.subtract(g_all, np.repeat(means, sizes))
    np.square(dev2, out=dev2)
    neg_dev = np.subtract(g_all, 1.0, out=work)
    np.abs(neg_dev, out=neg_dev)
    np.negative(neg_dev, out=neg_dev)
    out: dict[str, GainStats] = {}
    for i, (name, (_, lo, hi)) in enumerate(zip(names, gains.values(), strict=True)):
        a, b, n = int(starts[i]), int(stops[i]), int(sizes[i])
        norm = math.sqrt(sum_sq[i])
        # numpy's pairwise sum of the segment, over n: np.mean's very figure, one call fewer
        std = math.sqrt(float(np.add.reduce(dev2[a:b])) / n)
        rms = math.sqrt(sum_sq[i] / n)  # channel_spread's RMS: every channel is finite here
        out[name] = GainStats(n, norm, norm / math.sqrt(n), lo, hi,
                              means[i], std, 0, float(near[i]) / n,
                              _extreme(g_all[a:b], neg_dev[a:b]),
                              std / rms if rms > 0 else float("nan"), float(negative[i]) / n)
    return out
