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
from typing import Any

from ckpt_audit.records import Finding, NormRecord, Severity, Status, Verdict
from ckpt_audit.runs.audit import CheckpointResult, tracked_names

SCHEMA = "ckpt-audit.trend/1"
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

    @property
    def verdict(self) -> Verdict:
        """Worst verdict over the checkpoints (jumps are already folded in as warn findings)."""
        return Verdict.worst(r.verdict for r in self.results)


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
    """Assemble a :class:`Trend`; each jump is a ``trend-jump`` finding on the later checkpoint."""
    names = tracked_names(results, roles, pattern)
    jumps = find_jumps(results, names, jump)
    by_step: dict[int, list[Finding]] = {}
    for j in jumps:
        by_step.setdefault(j.step_to, []).append(Finding(
            jump_severity, "trend-jump", j.name,
            f"ratio changed {j.change:+.1%} since step {j.step_from} "
            f"({j.ratio_from:.3f} -> {j.ratio_to:.3f}; alert above {jump:.0%})"))
    out = []
    for res in results:
        extra = tuple(by_step.pop(res.checkpoint.step, [])) if res.report else ()
        out.append(CheckpointResult(res.checkpoint, res.report, res.error, res.extra + extra))
    return Trend(run, tuple(out), names, first_out_of_band(out, names), jumps, jump)


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


def _num(x: float | None) -> float | None:
    """JSON has no NaN/inf: non-finite numbers become ``None``."""
    return x if x is not None and math.isfinite(x) else None


def trend_to_dict(trend: Trend) -> dict[str, Any]:
    """The ``ckpt-audit.trend/1`` JSON document."""
    checkpoints = []
    prev: dict[str, float] = {}
    for res in trend.results:
        gains: dict[str, Any] = {}
        for name in trend.tracked:
            rec = res.gains().get(name)
            if rec is None:
                continue
            ratio = rec.stats.ratio
            change = (ratio / prev[name] - 1.0) if name in prev and prev[name] else None
            gains[name] = {"role": rec.role.value, "layer": rec.layer, "ratio": _num(ratio),
                           "norm": _num(rec.stats.norm), "status": rec.status.value,
                           "severity": rec.severity.value, "change": _num(change)}
            if math.isfinite(ratio):
                prev[name] = ratio
        checkpoints.append({
            "path": res.checkpoint.path, "name": res.checkpoint.name, "step": res.checkpoint.step,
            "layout": res.checkpoint.layout, "verdict": res.verdict,
            "final_ratio": _num(res.final_ratio), "complete": res.checkpoint.complete,
            "problems": list(res.checkpoint.problems), "error": res.error, "gains": gains,
            "findings": [{"severity": f.severity.value, "code": f.code, "tensor": f.tensor,
                          "message": f.message} for f in res.findings
                         if f.severity.rank >= Severity.WARN.rank],
        })
    return {
        "schema": SCHEMA, "run": trend.run, "verdict": trend.verdict,
        "tracked": list(trend.tracked),
        "checkpoints": checkpoints, "first_out_of_band": dict(trend.first_out_of_band),
        "jump_threshold": trend.jump_threshold,
        "jumps": [{"name": j.name, "step_from": j.step_from, "step_to": j.step_to,
                   "ratio_from": j.ratio_from, "ratio_to": j.ratio_to, "change": _num(j.change)}
                  for j in trend.jumps],
    }
