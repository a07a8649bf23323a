"""Trends over a run: each tracked gain's ratio per checkpoint, when it left its band, signals.

Everything here is a pure function of the :class:`~ckpt_audit.runs.audit.CheckpointResult` tuple
that auditing a run produced; the signals themselves (known start, jumps, rates, gains shrinking
together, channel spread) are :func:`ckpt_audit.core.signals.step_findings`, the one definition
``watch`` and the training-time monitor share. Definitions (docs/RUNS.md, docs/SIGNALS.md):

- *ratio*: the audit's ‖γ_eff‖₂ / √n of the gain (``NormRecord.stats.ratio``).
- *out of band*: :func:`ckpt_audit.core.signals.out_of_band`.
- *first out of band*: the step of the first complete, audited checkpoint where a gain was out of
  band (it may have come back later; the JSON keeps the first step only).
- *reference*: the known start (a virtual step-0 point, every gain 1) for a from-scratch run, a
  reference checkpoint when one is given, else the first audited checkpoint.
- *change*: ``ratio_b / ratio_a − 1`` between consecutive points (the reference first); a *jump*
  is a change whose absolute value exceeds the threshold (policy ``[signals] jump``, 0.30).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import field

from ckpt_audit.core.policy import SignalPolicy
from ckpt_audit.core.signals import (
    SIGNAL_CODES,
    Collective,
    GainPoint,
    Jump,
    Snapshot,
    choose_start,
    collective,
    gain_rate,
    jumps_between,
    run_findings,
)
from ckpt_audit.core.signals import out_of_band as _out_of_band
from ckpt_audit.records import Finding, NormRecord, Severity, Verdict, frozen, verdict_of
from ckpt_audit.runs.audit import CheckpointResult, tracked_names

DEFAULT_ROLES = ("final", "mtp")
_SPARK = "▁▂▃▄▅▆▇█"

__all__ = ["SIGNAL_CODES", "Jump", "Trend", "build_trend", "gain_rate", "out_of_band", "series",
           "snapshot_of", "sparkline"]


@frozen
class Trend:
    """The trajectory of a run's tracked gains."""

    run: str
    results: tuple[CheckpointResult, ...]
    tracked: tuple[str, ...]
    first_out_of_band: dict[str, int] = field(hash=False)
    jumps: tuple[Jump, ...]
    jump_threshold: float
    #: Findings about the run as a whole (the run signals, ``trend-jump`` among them): they count
    #: in the run's verdict, not in a checkpoint's, whose verdict is the same whatever the
    #: command (its audit + baseline). ``signal_steps`` says at which step each one fired.
    findings: tuple[Finding, ...] = ()
    signal_steps: tuple[tuple[int, Finding], ...] = ()
    points: tuple[Snapshot, ...] = ()
    start: Snapshot | None = None
    reference: Snapshot | None = None
    reference_note: str = ""
    signals: SignalPolicy = field(default_factory=SignalPolicy)

    @property
    def verdict(self) -> Verdict:
        """Worst of the checkpoints' verdicts and the run's own findings."""
        return Verdict.worst([*(r.verdict for r in self.results), verdict_of(self.findings)])

    @property
    def reference_kind(self) -> str:
        """``known-start``, ``checkpoint`` (given), ``first-checkpoint`` or ``none``."""
        if self.reference is None:
            return "none"
        if self.start is None:
            return "first-checkpoint"
        return "known-start" if self.start.label.startswith("known start") else "checkpoint"

    def previous(self, step: int) -> Snapshot | None:
        """The point before the audited checkpoint at ``step`` (``start`` for the first)."""
        prev = self.start
        for p in self.points:
            if p.step == step:
                return prev
            prev = p
        return None

    def point(self, step: int) -> Snapshot | None:
        return next((p for p in self.points if p.step == step), None)

    def collective(self, point: Snapshot | None) -> Collective | None:
        return collective(point, self.reference) if point and self.reference else None

    def rate(self, step: int, name: str) -> float | None:
        """The gain's rate per 100 steps into the checkpoint at ``step`` (docs/SIGNALS.md)."""
        point, before = self.point(step), self.previous(step)
        if point is None or before is None or self.reference is None:
            return None
        return gain_rate(before, point, self.reference, name)


def out_of_band(rec: NormRecord) -> bool:
    """Whether an audited gain is outside its band (:func:`ckpt_audit.core.signals.out_of_band`)."""
    return _out_of_band(rec.severity, rec.status)


def snapshot_of(res: CheckpointResult) -> Snapshot:
    """Every audited gain of one checkpoint as a signals :class:`Snapshot`."""
    return Snapshot.of(res.checkpoint.step, (GainPoint.of(r) for r in res.gains().values()),
                       f"step {res.checkpoint.step}")


def series(results: Sequence[CheckpointResult], name: str) -> list[tuple[int, float | None]]:
    """``(step, ratio)`` of one gain for every checkpoint (``None`` where not audited/absent)."""
    out: list[tuple[int, float | None]] = []
    for res in results:
        rec = res.gains().get(name)
        out.append((res.checkpoint.step, rec.stats.ratio if rec else None))
    return out


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
                jump: float | None = None, jump_severity: Severity = Severity.WARN,
                signals: SignalPolicy | None = None,
                reference: Snapshot | None = None) -> Trend:
    """Assemble a :class:`Trend`; every run signal is a finding of the run (with its step).

    ``jump`` overrides the policy's ``[signals] jump``; ``reference`` is a reference checkpoint
    (for a run that starts from a trained model); without one, :func:`choose_start` decides.
    """
    sp = signals if signals is not None else SignalPolicy()
    threshold = sp.jump if jump is None else jump
    results = tuple(results)
    names = tracked_names(results, roles, pattern)
    points = tuple(snapshot_of(r) for r in results if r.report is not None)
    start, note = choose_start(points, sp, reference)
    ref = start if start is not None else (points[0] if points else None)
    found = run_findings(points, start, sp, jump_names=names, jump=threshold,
                         jump_severity=jump_severity)
    steps = tuple((p.step, f) for p, fs in zip(points, found, strict=True) for f in fs)
    jumps: list[Jump] = []
    prev = start
    for p in points:
        if prev is not None:
            jumps += jumps_between(prev, p, names, threshold)
        prev = p
    return Trend(run, results, names, first_out_of_band(results, names),
                 tuple(sorted(jumps, key=lambda j: (j.step_to, j.name))), threshold,
                 tuple(f for _, f in steps), steps, points, start, ref, note, sp)


def signals_at(context: Sequence[CheckpointResult], latest: CheckpointResult,
               signals: SignalPolicy, *, roles: Sequence[str] = DEFAULT_ROLES,
               reference: Snapshot | None = None) -> tuple[Finding, ...]:
    """The run signals that fire at ``latest``, for ``watch``: ``context`` holds the run's first
    audited checkpoint (it decides the known start) and the one just before ``latest``."""
    trend = build_trend("", [*context, latest], roles=roles, signals=signals,
                        reference=reference)
    return tuple(f for s, f in trend.signal_steps if s == latest.checkpoint.step)


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
