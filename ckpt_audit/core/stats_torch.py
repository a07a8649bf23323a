"""The optional torch backend for gain statistics (``--device cuda``).

All gains are packed into one float64 tensor, moved to the device once, and reduced per gain
with segment sums; results match :func:`ckpt_audit.core.stats.gain_stats` to float64 rounding
(tests compare the two on CPU). ``auto`` never picks this: gains are kilobytes, and a transfer
costs more than the arithmetic.
"""

from __future__ import annotations

import math

import numpy as np

from ckpt_audit.core.stats import EXTREME_COUNT, channel_spread, effective_gain
from ckpt_audit.errors import CkptAuditError
from ckpt_audit.records import Convention, GainStats


def require_cuda() -> None:
    """Raise a clear error when CUDA is asked for but absent."""
    try:
        import torch
    except ImportError:
        raise CkptAuditError("--device cuda needs torch (pip install torch)") from None
    if not torch.cuda.is_available():
        raise CkptAuditError("--device cuda was asked for but no CUDA device is available")


def gain_stats_torch(values: dict[str, np.ndarray], convs: dict[str, Convention],
                     near_zero: float, device: str) -> dict[str, GainStats]:
    """Statistics of many gains at once on ``device`` (float64 throughout)."""
    import torch

    names = list(values)
    if not names:
        return {}
    gs = [effective_gain(values[n], convs[n]) for n in names]
    sizes = [g.size for g in gs]
    flat = torch.from_numpy(np.concatenate(gs)).to(device)
    seg = torch.repeat_interleave(torch.arange(len(names), device=device),
                                  torch.tensor(sizes, device=device))
    k = len(names)

    def segsum(x: torch.Tensor) -> torch.Tensor:
        return torch.zeros(k, dtype=torch.float64, device=device).index_add_(0, seg, x)

    finite = torch.isfinite(flat)
    fz = torch.where(finite, flat, torch.zeros_like(flat))
    nfin = segsum(finite.double())
    sumsq = segsum(fz * fz)
    mean = segsum(fz) / nfin.clamp(min=1)
    var = segsum(torch.where(finite, (flat - mean[seg]) ** 2, torch.zeros_like(flat)))
    near = segsum((finite & (flat.abs() < near_zero)).double())
    out: dict[str, GainStats] = {}
    sumsq_c, mean_c, var_c, near_c, nfin_c = (t.cpu().numpy() for t in (sumsq, mean, var, near,
                                                                          nfin))
    for i, (name, g) in enumerate(zip(names, gs, strict=True)):
        n = sizes[i]
        nonfinite = int(n - nfin_c[i])
        norm = float("nan") if nonfinite else math.sqrt(float(sumsq_c[i]))
        gf = g[np.isfinite(g)]
        dev = np.where(np.isfinite(g), np.abs(g - 1.0), np.inf)
        order = np.lexsort((np.arange(n), -dev))[: min(EXTREME_COUNT, n)]
        std = math.sqrt(float(var_c[i]) / max(gf.size, 1))
        out[name] = GainStats(
            n, norm, norm / math.sqrt(n) if n else float("nan"),
            float(gf.min()) if gf.size else float("nan"),
            float(gf.max()) if gf.size else float("nan"),
            float(mean_c[i]), std, nonfinite,
            float(near_c[i]) / n, tuple((int(j), float(g[j])) for j in order),
            channel_spread(std, gf), float(np.count_nonzero(gf < 0)) / n if n else 0.0,
        )
    return out
