"""Pure comparisons: runs side by side (``compare``) and two checkpoints gain by gain (``diff``).

Definitions (docs/RUNS.md):

- *forward order* of gains: embedding norms, then by layer index (within a layer by name), then
  the final norm, then MTP norms, then anything else without a layer.
- *matching steps*: steps at which every compared run has an audited checkpoint.
- *first divergence* of run B from the reference run A: the earliest matching step, and at that
  step the first gain in forward order present in both, with ``|ratio_B − ratio_A| > tolerance``.
- ``diff``: for each gain in either checkpoint, ``change = ratio_B − ratio_A`` and
  ``relative = ratio_B / ratio_A − 1``; rows sorted by ``|change|`` descending, gains present in
  only one checkpoint last.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ckpt_audit.records import AuditReport, NormRecord, Role
from ckpt_audit.runs.audit import CheckpointResult

DEFAULT_TOLERANCE = 0.05


def forward_key(rec: NormRecord) -> tuple[int, int, str]:
    """Sort key for the forward order of gains."""
    if rec.role is Role.EMBEDDING:
        return (0, 0, rec.name)
    if rec.layer is not None and rec.role is not Role.MTP:
        return (1, rec.layer, rec.name)
    if rec.role is Role.FINAL:
        return (2, 0, rec.name)
    if rec.role is Role.MTP:
        return (3, rec.layer if rec.layer is not None else 0, rec.name)
    return (4, 0, rec.name)


@dataclass(frozen=True)
class Divergence:
    """The first gain of ``other`` whose ratio differs from ``reference`` by more than tolerance."""

    reference: str
    other: str
    step: int
    name: str
    role: str
    layer: int | None
    ratio_reference: float
    ratio_other: float

    @property
    def difference(self) -> float:
        return self.ratio_other - self.ratio_reference


def audited_by_step(results: Sequence[CheckpointResult]) -> dict[int, CheckpointResult]:
    """The audited checkpoints of a run by step (the last one wins when a step repeats)."""
    return {r.checkpoint.step: r for r in results if r.report is not None}


def matching_steps(runs: Sequence[Sequence[CheckpointResult]]) -> list[int]:
    """Steps at which every run has an audited checkpoint, ascending."""
    if not runs:
        return []
    common = set(audited_by_step(runs[0]))
    for res in runs[1:]:
        common &= set(audited_by_step(res))
    return sorted(common)


def first_divergence(reference: tuple[str, Sequence[CheckpointResult]],
                     other: tuple[str, Sequence[CheckpointResult]],
                     tolerance: float = DEFAULT_TOLERANCE) -> Divergence | None:
    """The first divergence of ``other`` from ``reference`` (``None`` when within tolerance)."""
    ref_name, ref_results = reference
    oth_name, oth_results = other
    ref_by, oth_by = audited_by_step(ref_results), audited_by_step(oth_results)
    for step in matching_steps([ref_results, oth_results]):
        a, b = ref_by[step].gains(), oth_by[step].gains()
        for name in sorted(set(a) & set(b), key=lambda n: forward_key(a[n])):
            ra, rb = a[name].stats.ratio, b[name].stats.ratio
            diverged = (math.isfinite(ra) != math.isfinite(rb)) or (
                math.isfinite(ra) and abs(rb - ra) > tolerance)
            if diverged:
                return Divergence(ref_name, oth_name, step, name, a[name].role.value,
                                  a[name].layer, ra, rb)
    return None


@dataclass(frozen=True)
class GainDiff:
    """One gain in two checkpoints (``None`` on the side where it is absent)."""

    name: str
    role: str
    layer: int | None
    ratio_a: float | None
    ratio_b: float | None
    status_a: str | None
    status_b: str | None

    @property
    def change(self) -> float | None:
        if self.ratio_a is None or self.ratio_b is None:
            return None
        return self.ratio_b - self.ratio_a

    @property
    def relative(self) -> float | None:
        if self.ratio_a is None or self.ratio_b is None or self.ratio_a == 0:
            return None
        return self.ratio_b / self.ratio_a - 1.0


def diff_reports(a: AuditReport, b: AuditReport) -> list[GainDiff]:
    """Per gain, both ratios and the change, sorted by |change| (largest first)."""
    ga = {r.name: r for r in a.norms}
    gb = {r.name: r for r in b.norms}
    rows = []
    for name in set(ga) | set(gb):
        ra, rb = ga.get(name), gb.get(name)
        rec = ra or rb
        assert rec is not None
        rows.append(GainDiff(name, rec.role.value, rec.layer,
                             ra.stats.ratio if ra else None, rb.stats.ratio if rb else None,
                             ra.status.value if ra else None, rb.status.value if rb else None))

    def key(d: GainDiff) -> tuple[int, float, str]:
        c = d.change
        if c is None:
            return (2, 0.0, d.name)
        if not math.isfinite(c):
            return (0, 0.0, d.name)  # a non-finite change is the largest of all
        return (1, -abs(c), d.name)

    return sorted(rows, key=key)


def _num(x: float | None) -> float | None:
    return x if x is not None and math.isfinite(x) else None


def diff_to_dict(a: AuditReport, b: AuditReport, rows: Sequence[GainDiff]) -> dict[str, Any]:
    """The ``ckpt-audit.diff/1`` JSON document."""
    return {
        "schema": "ckpt-audit.diff/1", "a": a.checkpoint, "b": b.checkpoint,
        "verdict_a": a.verdict, "verdict_b": b.verdict,
        "gains": [{"name": d.name, "role": d.role, "layer": d.layer, "ratio_a": _num(d.ratio_a),
                   "ratio_b": _num(d.ratio_b), "change": _num(d.change),
                   "relative": _num(d.relative), "status_a": d.status_a, "status_b": d.status_b}
                  for d in rows],
    }


def compare_to_dict(runs: Sequence[tuple[str, Sequence[CheckpointResult]]],
                    divergences: Sequence[Divergence | None], tolerance: float) -> dict[str, Any]:
    """The ``ckpt-audit.compare/1`` JSON document (the first run is the reference)."""
    steps = matching_steps([r for _, r in runs])
    by = [audited_by_step(r) for _, r in runs]
    return {
        "schema": "ckpt-audit.compare/1", "runs": [name for name, _ in runs],
        "reference": runs[0][0] if runs else None, "tolerance": tolerance,
        "matching_steps": steps,
        "rows": [{"step": s, "final_ratio": [_num(b[s].final_ratio) for b in by],
                  "verdict": [b[s].verdict for b in by]} for s in steps],
        "first_divergence": [None if d is None else {
            "run": d.other, "step": d.step, "name": d.name, "role": d.role, "layer": d.layer,
            "ratio_reference": _num(d.ratio_reference), "ratio_other": _num(d.ratio_other),
            "difference": _num(d.difference)} for d in divergences],
    }
