"""Run signals: one definition shared by ``trend``, ``watch`` and the training-time monitor.

A :class:`Snapshot` is every gain of the model at one optimizer step (from a checkpoint's audit or
from a live module). :func:`step_findings` compares a snapshot with the previous point and with
the run's reference and returns the findings; it is the only place a signal is computed.
Definitions (docs/SIGNALS.md repeats them; thresholds are the policy's ``[signals]`` table):

- *reference*: the known start (step 0, every gain at its init value: ratio 1, spread 0, no
  negative channel) for a from-scratch run; otherwise a reference checkpoint.
- *factor* of a gain: its ratio / the reference's ratio of the same gain (= the ratio itself
  against the known start).
- *rate*: (factor_b − factor_a) / (step_b − step_a) × 100, between consecutive points: the change
  per 100 optimizer steps. With Adam a channel moves at most about lr per step, so a healthy rate
  is bounded by about 100 × lr.
- *layer median*, *layer spread*, *layer shrinking*: over every ``layer``-role gain, the median of
  the factors, their population std / median, and the share of factors below 1.
- *channel spread*: std / RMS of one gain's channels (``GainStats.spread``); its *rate* is the
  growth per 100 steps; *negative share*: fraction of channels below 0 (``GainStats.negative``).
- *out of band*: the policy gives the gain severity warn or fail, or its status is collapse, low,
  explosion or nonfinite.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import field

from ckpt_audit.core.policy import SignalPolicy
from ckpt_audit.records import Finding, NormRecord, Role, Severity, Status, frozen

#: Roles whose own rate and channel signals are checked (layer gains are checked collectively).
RATED_ROLES = (Role.FINAL, Role.MTP)
_OUT_STATUSES = {Status.COLLAPSE, Status.LOW, Status.EXPLOSION, Status.NONFINITE}
LAYER_MEDIAN = "layer gains (median)"
#: Finding codes of the run signals.
SIGNAL_CODES = ("trend-jump", "drift-rate", "channel-spread", "channel-negative",
                "gains-shrink-together")


def out_of_band(severity: Severity, status: Status) -> bool:
    """Whether a gain is outside its band (see the module docstring)."""
    return severity.rank >= Severity.WARN.rank or status in _OUT_STATUSES


@frozen
class GainPoint:
    """One gain at one step: what the signals need of it."""

    name: str
    role: Role
    layer: int | None
    ratio: float
    spread: float
    negative: float

    @classmethod
    def of(cls, rec: NormRecord) -> GainPoint:
        s = rec.stats
        return cls(rec.name, rec.role, rec.layer, s.ratio, s.spread, s.negative)


@frozen
class Snapshot:
    """Every gain at one step. ``label`` names the point in messages (``step 25``)."""

    step: int
    gains: Mapping[str, GainPoint] = field(hash=False)
    label: str = ""

    @property
    def name(self) -> str:
        return self.label or f"step {self.step}"

    @classmethod
    def of(cls, step: int, gains: Iterable[GainPoint], label: str = "") -> Snapshot:
        return cls(step, {g.name: g for g in gains}, label)


def known_start(like: Snapshot) -> Snapshot:
    """The virtual step-0 point of a from-scratch run: every gain of ``like`` at its init value."""
    return Snapshot(0, {n: GainPoint(n, g.role, g.layer, 1.0, 0.0, 0.0)
                        for n, g in like.gains.items()}, "known start (step 0)")


def _finite(x: float | None) -> bool:
    return x is not None and math.isfinite(x)


def factor(point: Snapshot, reference: Snapshot, name: str) -> float | None:
    """The gain's ratio relative to the reference's same gain (``None`` if either lacks it)."""
    g, r = point.gains.get(name), reference.gains.get(name)
    if g is None or r is None or not _finite(g.ratio) or not _finite(r.ratio) or r.ratio == 0:
        return None
    return g.ratio / r.ratio


@frozen
class Collective:
    """The layer gains of one point against the reference (docs/SIGNALS.md)."""

    count: int
    median: float
    spread: float
    shrinking: float


def collective(point: Snapshot, reference: Snapshot) -> Collective | None:
    """Median, spread and shrinking share of the layer gains' factors (``None``: under 2)."""
    fs = [f for n, g in point.gains.items() if g.role is Role.LAYER
          for f in (factor(point, reference, n),) if f is not None]
    if len(fs) < 2:
        return None
    med = statistics.median(fs)
    spread = statistics.pstdev(fs) / med if med > 0 else math.inf
    return Collective(len(fs), med, spread, sum(f < 1.0 for f in fs) / len(fs))


def is_far_from_init(first: Snapshot, sp: SignalPolicy) -> bool:
    """Whether a final/MTP gain or the layer median of ``first`` is beyond ``far_from_init``."""
    start = known_start(first)
    values = [factor(first, start, n) for n, g in first.gains.items() if g.role in RATED_ROLES]
    col = collective(first, start)
    values.append(col.median if col else None)
    return any(v is not None and abs(v - 1.0) > sp.far_from_init for v in values)


def starts_from_scratch(first: Snapshot, sp: SignalPolicy) -> tuple[bool, str]:
    """``(from scratch?, why)`` for a run whose first audited point is ``first``."""
    if first.step <= sp.late_step:
        return True, (f"first checkpoint at step {first.step} (≤ {sp.late_step:g}): from scratch, "
                      "so step 0 is the known start (every gain 1)")
    if is_far_from_init(first, sp):
        return False, (f"first checkpoint at step {first.step} (> {sp.late_step:g}) is far from "
                       f"init (beyond ±{sp.far_from_init:g}): not treated as from scratch; "
                       "signals start at the first checkpoint")
    return True, (f"first checkpoint at step {first.step} is still near init: from scratch, so "
                  "step 0 is the known start (every gain 1)")


@frozen
class Jump:
    """A sudden change of one gain's ratio between two consecutive points."""

    name: str
    step_from: int
    step_to: int
    ratio_from: float
    ratio_to: float

    @property
    def change(self) -> float:
        return self.ratio_to / self.ratio_from - 1.0 if self.ratio_from else math.inf


def jumps_between(prev: Snapshot, cur: Snapshot, names: Sequence[str],
                  threshold: float) -> list[Jump]:
    """Gains of ``names`` whose ratio changed by more than ``threshold`` (relative)."""
    out = []
    for name in names:
        a, b = prev.gains.get(name), cur.gains.get(name)
        if a is None or b is None or not _finite(a.ratio) or not _finite(b.ratio):
            continue
        j = Jump(name, prev.step, cur.step, a.ratio, b.ratio)
        if abs(j.change) > threshold:
            out.append(j)
    return out


def choose_start(points: Sequence[Snapshot], sp: SignalPolicy,
                 reference: Snapshot | None = None) -> tuple[Snapshot | None, str]:
    """The point before the first checkpoint, and a sentence saying which reference and why.

    A given ``reference`` wins; else a from-scratch run gets the known start (a real step-0
    checkpoint is its own start); else ``None`` (the first checkpoint is the reference).
    """
    if reference is not None:
        return reference, f"reference: {reference.name} (given)"
    if not points:
        return None, "no audited checkpoint"
    if points[0].step == 0:
        return None, "reference: the run's own step-0 checkpoint"
    scratch, why = starts_from_scratch(points[0], sp)
    return (known_start(points[0]) if scratch else None), why


def _level(value: float, warn: float, fail: float) -> Severity | None:
    if not math.isfinite(value) or value > fail:
        return Severity.FAIL
    if value > warn:
        return Severity.WARN
    return None


def _rate(a: float, b: float, steps: int) -> float:
    return (b - a) / steps * 100.0


def gain_rate(prev: Snapshot, cur: Snapshot, reference: Snapshot, name: str) -> float | None:
    """The rate of one gain's factor between ``prev`` and ``cur`` (per 100 steps)."""
    fa, fb = factor(prev, reference, name), factor(cur, reference, name)
    if fa is None or fb is None or cur.step <= prev.step:
        return None
    return _rate(fa, fb, cur.step - prev.step)


def step_findings(prev: Snapshot, cur: Snapshot, reference: Snapshot, sp: SignalPolicy, *,
                  jump_names: Sequence[str] = (), jump: float | None = None,
                  jump_severity: Severity = Severity.WARN) -> tuple[Finding, ...]:
    """Every signal of ``cur`` against the previous point ``prev`` and the run's ``reference``.

    ``jump_names``: gains checked for jumps (``jump`` overrides ``sp.jump``). Rates and channel
    signals are checked for the final and MTP gains, the collective signals for the layer gains.
    """
    out: list[Finding] = []
    steps = cur.step - prev.step
    threshold = sp.jump if jump is None else jump
    between = f"between {prev.name} and {cur.name}"
    for j in jumps_between(prev, cur, jump_names, threshold):
        out.append(Finding(jump_severity, "trend-jump", j.name,
                           f"ratio changed {j.change:+.1%} {between} ({j.ratio_from:.3f} -> "
                           f"{j.ratio_to:.3f}; alert above {threshold:.0%})"))
    if steps <= 0:
        return tuple(out)
    for name, g in cur.gains.items():
        if g.role not in RATED_ROLES:
            continue
        fa, fb = factor(prev, reference, name), factor(cur, reference, name)
        p = prev.gains.get(name)
        rate = gain_rate(prev, cur, reference, name)
        if fa is not None and fb is not None and rate is not None:
            out += _rate_finding("drift-rate", name, f"ratio relative to {reference.name}:",
                                 fa, fb, between, rate, abs(rate), sp.rate_warn, sp.rate_fail)
        if p is not None and _finite(p.spread) and _finite(g.spread):
            srate = _rate(p.spread, g.spread, steps)
            out += _rate_finding("channel-spread", name, "channel std/RMS:", p.spread, g.spread,
                                 between, srate, srate, sp.spread_rate_warn,
                                 sp.spread_rate_fail)
        sev = _level(g.negative, sp.negative_warn, sp.negative_fail) \
            if _finite(g.negative) else None
        if sev:
            out.append(Finding(sev, "channel-negative", name,
                               f"{g.negative:.1%} of the channels are negative at {cur.name} "
                               f"(warn above {sp.negative_warn:.0%}, fail above "
                               f"{sp.negative_fail:.0%})"))
    ca, cb = collective(prev, reference), collective(cur, reference)
    if ca is not None and cb is not None:
        rate = _rate(ca.median, cb.median, steps)
        out += _rate_finding("drift-rate", LAYER_MEDIAN,
                             f"median layer-gain ratio relative to {reference.name}:",
                             ca.median, cb.median, between, rate, abs(rate), sp.layer_rate_warn,
                             sp.layer_rate_fail)
    if cb is not None and shrink_together(cb, sp):
        out.append(Finding(Severity.WARN, "gains-shrink-together", LAYER_MEDIAN,
                           f"{cb.shrinking:.0%} of {cb.count} layer gains shrank by a common "
                           f"factor (median {cb.median:.3f} relative to {reference.name}, spread "
                           f"{cb.spread:.3f}) at {cur.name}: the signature of weight decay on "
                           "the norm gains; exclude norm weights (and biases) from weight decay"))
    return tuple(out)


def _rate_finding(code: str, tensor: str, what: str, a: float, b: float, between: str,
                  rate: float, size: float, warn: float, fail: float) -> list[Finding]:
    """A finding when ``size`` (the rate, or its absolute value) is above ``warn``/``fail``."""
    sev = _level(size, warn, fail)
    if sev is None:
        return []
    return [Finding(sev, code, tensor, f"{what} {a:.3f} -> {b:.3f} {between}: {rate:+.3f} per "
                                       f"100 steps (warn above {warn:g}, fail above {fail:g})")]


def shrink_together(c: Collective, sp: SignalPolicy) -> bool:
    """The weight-decay-on-gains signature (thresholds in the module docstring)."""
    return (c.median <= sp.together_median and c.shrinking >= sp.together_share
            and c.spread <= sp.together_spread)


def run_findings(points: Sequence[Snapshot], reference: Snapshot | None, sp: SignalPolicy,
                 **kwargs: object) -> list[tuple[Finding, ...]]:
    """:func:`step_findings` for each point against the one before it.

    ``reference`` is the point before the first (the known start) or ``None``: then the first
    point is the reference and gets no findings of its own.
    """
    out: list[tuple[Finding, ...]] = []
    ref = reference if reference is not None else (points[0] if points else None)
    prev = reference
    for p in points:
        out.append(step_findings(prev, p, ref, sp, **kwargs)  # type: ignore[arg-type]
                   if prev is not None and ref is not None else ())
        prev = p
    return out
