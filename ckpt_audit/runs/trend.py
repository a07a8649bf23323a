"""Trends over a run: each tracked gain's ratio per checkpoint, when it left its band, sudden jumps.

Everything here is a pure function of the :class:`~ckpt_audit.runs.audit.CheckpointResult` tuple
that
auditing a run produced. Definitions (docs/RUNS.md repeats them):

- *ratio*: the audit's ‖γ_eff‖₂ / √n of the gain (``NormRecord.stats.ratio``).
- *out of band*: the policy gives the gain severity ``warn`` or ``fail``, or its status is one of
  ``collapse``, ``low``, ``explosion``, ``nonfinite`` (so informational roles are followed too).
- *first out of band*: the step of the first complete, audited checkpoint where a gain was out of
  band (it may have come back later; the JSON keeps the first step only).
- *change*: ``ratio_b / ratio_a − 1`` between consecutive audited checkpoints that both have the
  gain; a *jump* is a change whose absolute value exceeds the threshold (default 0.30, i.e. 30 %
  between two checkpoints).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from ckpt_audit.records import Finding, NormRecord, Severity, Status, Verdict, verdict_of
from ckpt_audit.runs.audit import CheckpointResult, tracked_names

DEFAULT_JUMP = 0.30
DEFAULT_ROLES = ("final", "mtp")
_OUT_STATUSES = {Status.COLLAPSE, Status.LOW, Status.EXPLOSION, Status.NONFINITE}
_SPARK = "▁▂▃▄▅▆▇█"


@dataclass(frozen=True)
class Jump:
    """A sudden change of one gain's ratio between two consecutive audited checkpoints."""

    name: str
    step_from: int
    step_to: int
    ratio_from: float
    ratio_to: float

    @property
    def change(self) -> float:
        return self.ratio_to / self.ratio_from - 1.0 if self.ratio_from else math.inf


@dataclass(frozen=True)
class Trend:
    """The trajectory of a run's tracked gains."""

    run: str
    results: tuple[CheckpointResult, ...]
    tracked: tuple[str, ...]
    first_out_of_band: dict[str, int] = field(hash=False)
    jumps: tuple[Jump, ...]
    jump_threshold: float
    #: Findings about the run as a whole (``trend-jump``): they count in the run's verdict, not
    #: in a checkpoint's, whose verdict is the same whatever the command (its audit + baseline).
    findings: tuple[Finding, ...] = ()

    @property
    def verdict(self) -> Verdict:
        """Worst of the checkpoints' verdicts and the run's own findings."""
        return Verdict.worst([*(r.verdict for r in self.results), verdict_of(self.findings)])


def out_of_band(rec: NormRecord) -> bool:
    """Whether a gain is outside its band (see the module docstring)."""
    return rec.severity.rank >= Severity.WARN.rank or rec.status in _OUT_STATUSES


def series(results: Sequence[CheckpointResult], name: str) -> list[tuple[int, float | None]]:
    """``(step, ratio)`` of one gain for every checkpoint (``None`` where not audited/absent)."""
    out: list[tuple[int, float | None]] = []
    for res in results:
        rec = res.gains().get(name)
        out.append((res.checkpoint.step, rec.stats.ratio if rec else None))
    return out


def find_jumps(results: Sequence[CheckpointResult], names: Sequence[str],
               threshold: float) -> tuple[Jump, ...]:
    """Changes between consecutive checkpoints above ``threshold`` (relative), in step order."""
    jumps: list[Jump] = []
    for name in names:
        prev: tuple[int, float] | None = None
        for step, ratio in series(results, name):
            if ratio is None or not math.isfinite(ratio):
                continue
            if prev is not None:
                jump = Jump(name, prev[0], step, prev[1], ratio)
                if abs(jump.change) > threshold:
                    jumps.append(jump)
            prev = (step, ratio)
    return tuple(sorted(jumps, key=lambda j: (j.step_to, j.name)))


def first_out_of_band(results: Sequence[CheckpointResult],
                      names: Sequence[str]) -> dict[str, int]:
    """The first step at which each tracked gain was out of band (gains never out are absent)."""
    out: dict[str, int] = {}
    for res in results:
        for name, rec in res.gains().items():
            if name in names and name not in out and out_of_band(rec):
                out[name] = res.checkpoint.step
    return {n: out[n] for n in names if n in out}


def build_trend(run: str, results: Sequence[CheckpointResult], *,
                roles: Sequence[str] = DEFAULT_ROLES, pattern: str | None = None,
                jump: float = DEFAULT_JUMP,
                jump_severity: Severity = Severity.WARN) -> Trend:
    """Assemble a :class:`Trend`; each jump is a ``trend-jump`` finding of the run."""
    names = tracked_names(results, roles, pattern)
    jumps = find_jumps(results, names, jump)
    found = tuple(Finding(jump_severity, "trend-jump", j.name,
                          f"ratio changed {j.change:+.1%} between steps {j.step_from} and "
                          f"{j.step_to} ({j.ratio_from:.3f} -> {j.ratio_to:.3f}; alert above "
                          f"{jump:.0%})") for j in jumps)
    results = tuple(results)
    return Trend(run, results, names, first_out_of_band(results, names), jumps, jump, found)


def sparkline(values: Sequence[float | None], lo: float | None = None,
              hi: float | None = None, min_span: float = 0.1) -> str:
    """One character per value, ▁ (lowest) to █ (highest); ``·`` missing, ``!`` non-finite.

    The scale is the values' own range, widened symmetrically to at least ``min_span`` (in ratio
    units) so that noise of a few thousandths does not fill the whole ▁..█ range.
    """
    finite = [v for v in values if v is not None and math.isfinite(v)]
    if not finite:
        return "·" * len(values)
    lo = min(finite) if lo is None else lo
    hi = max(finite) if hi is None else hi
    if hi - lo < min_span:
        mid = (hi + lo) / 2
        lo, hi = mid - min_span / 2, mid + min_span / 2
    chars = []
    for v in values:
        if v is None or not math.isfinite(v):
            chars.append("·" if v is None else "!")
        elif hi - lo <= 1e-12:
            chars.append(_SPARK[len(_SPARK) // 2])
        else:
            k = int(round((min(max(v, lo), hi) - lo) / (hi - lo) * (len(_SPARK) - 1)))
            chars.append(_SPARK[k])
    return "".join(chars)
