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
    dev = np.where(finite, np.abs(g - 1.0), np.inf)
    k = min(EXTREME_COUNT, n)
    top = np.argpartition(-dev, k - 1)[:k] if n > k else np.arange(n)
    # farthest first; ties broken by the lower index
    order = sorted(top.tolist(), key=lambda i: (-dev[i], i))
    extreme = tuple((int(i), float(g[i])) for i in order)
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
