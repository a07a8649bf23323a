"""PNG plots of ratio against step (matplotlib, Agg backend, imported only when plotting).

The policy's bands are shaded behind the lines (one colour per status), so a reader sees at a
glance which band each checkpoint sits in. Images are ``width`` × ``height`` pixels exactly.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from ckpt_audit.errors import CkptAuditError

#: (status, lower ratio or None, upper ratio or None)
Band = tuple[str, "float | None", "float | None"]

BAND_COLOURS = {
    "collapse": "#d62728", "low": "#ff7f0e", "shrink": "#bcdfa6", "nominal": "#2ca02c",
    "growth": "#bcdfa6", "explosion": "#d62728",
}


def _plot(path: str, lines: Mapping[str, Sequence[tuple[int, float | None]]], bands: Sequence[Band],
          title: str, width: int, height: int, dpi: int) -> tuple[int, int]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise CkptAuditError(f"--plot needs matplotlib ({exc}); pip install "
                             "'ckpt-audit[plot]'", path) from None
    finite = [r for pts in lines.values() for _, r in pts if r is not None and math.isfinite(r)]
    edges = [x for _, lo, hi in bands for x in (lo, hi) if x is not None]
    top = max([*finite, *edges, 1.0]) * 1.1
    fig = plt.figure(figsize=(width / dpi, height / dpi), dpi=dpi)
    try:
        ax = fig.add_subplot(1, 1, 1)
        ax.set_ylim(0.0, top)
        for status, lo, hi in bands:
            ax.axhspan(0.0 if lo is None else lo, top if hi is None else hi,
                       color=BAND_COLOURS.get(status, "#dddddd"), alpha=0.18, lw=0)
            mid = ((0.0 if lo is None else lo) + (top if hi is None else min(hi, top))) / 2
            ax.text(1.005, mid, status, transform=ax.get_yaxis_transform(), fontsize=7,
                    va="center", ha="left", color="#555555")
        for label, pts in lines.items():
            xs = [s for s, r in pts if r is not None and math.isfinite(r)]
            ys = [r for _, r in pts if r is not None and math.isfinite(r)]
            if xs:
                ax.plot(xs, ys, marker="o", ms=3, lw=1.5, label=label)
        ax.axhline(1.0, color="#333333", lw=0.6, ls="--")
        ax.set_xlabel("step")
        ax.set_ylabel("ratio ‖γ‖₂ / √n")
        ax.set_title(title, fontsize=10)
        if lines:
            ax.legend(fontsize=7, loc="upper left")
        fig.subplots_adjust(left=0.08, right=0.88, top=0.92, bottom=0.1)
        try:
            fig.savefig(path, dpi=dpi, format="png")
        except OSError as exc:
            raise CkptAuditError(f"cannot write the plot ({exc.strerror})", path) from None
    finally:
        plt.close(fig)
    return width, height


def plot_lines(path: str, series: Mapping[str, Sequence[tuple[int, float | None]]],
               bands: Sequence[Band], *, title: str, width: int = 1000, height: int = 600,
               dpi: int = 100) -> tuple[int, int]:
    """One line per series over the steps (a run's tracked gains for ``trend``, the runs' same
    gain for ``compare``), over the policy's bands; returns the image size in pixels."""
    return _plot(path, series, bands, title, width, height, dpi)
