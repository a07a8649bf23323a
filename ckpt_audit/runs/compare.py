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

from ckpt_audit.records import AuditReport, Finding, NormRecord, Role, Severity, frozen, verdict_of
from ckpt_audit.runs.audit import CheckpointResult

DEFAULT_TOLERANCE = 0.05

#: Relative precision (machine epsilon) of a stored float dtype, safetensors spelling.
STORED_EPSILON = {"F64": 2.0 ** -52, "F32": 2.0 ** -23, "F16": 2.0 ** -10, "BF16": 2.0 ** -7,
                  "F8_E4M3": 2.0 ** -3, "F8_E5M2": 2.0 ** -2}


def exceeds(difference: float, tolerance: float, scale: float, *dtypes: str) -> bool:
    """``difference > tolerance`` on the stored values' own precision: a difference within one
    epsilon of the coarser stored dtype (relative to ``scale``) of the tolerance is not over it,
    so a gain written exactly ``tolerance`` away never counts as beyond it."""
    if not math.isfinite(difference):
        return True
    eps = max((STORED_EPSILON.get(d.upper(), 2.0 ** -23) for d in dtypes), default=2.0 ** -23)
    return difference - tolerance > 4 * eps * max(abs(scale), 1e-30)


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


@frozen
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
                math.isfinite(ra) and exceeds(abs(rb - ra), tolerance, max(abs(ra), abs(rb)),
                                              a[name].dtype, b[name].dtype))
            if diverged:
                return Divergence(ref_name, oth_name, step, name, a[name].role.value,
                                  a[name].layer, ra, rb)
    return None


@frozen
class GainDiff:
    """One gain in two checkpoints (``None`` on the side where it is absent)."""

    name: str
    role: str
    layer: int | None
    ratio_a: float | None
    ratio_b: float | None
    status_a: str | None
    status_b: str | None
    dtype: str = "F32"

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
                             ra.status.value if ra else None, rb.status.value if rb else None,
                             max((r.dtype for r in (ra, rb) if r),
                                 key=lambda d: STORED_EPSILON.get(d.upper(), 0.0))))

    def key(d: GainDiff) -> tuple[int, float, str]:
        c = d.change
        if c is None:
            return (2, 0.0, d.name)
        if not math.isfinite(c):
            return (0, 0.0, d.name)  # a non-finite change is the largest of all
        return (1, -abs(c), d.name)

    return sorted(rows, key=key)


@frozen
class Comparison:
    """Runs side by side: each run's audited checkpoints, and each later run's first divergence
    from the first (the reference). A divergence is a ``run-diverged`` finding (fail)."""

    runs: tuple[tuple[str, tuple[CheckpointResult, ...]], ...]
    divergences: tuple[Divergence | None, ...]
    tolerance: float

    @property
    def findings(self) -> tuple[Finding, ...]:
        return tuple(Finding(Severity.FAIL, "run-diverged", d.name,
                             f"{d.other} first diverges from {d.reference} at step {d.step}: "
                             f"ratio {d.ratio_other:.4f} vs {d.ratio_reference:.4f} "
                             f"(|Δ| {abs(d.difference):.4f} > tolerance {self.tolerance})")
                     for d in self.divergences if d is not None)

    @property
    def verdict(self) -> str:
        """``fail`` when a run diverges, else ``pass`` (each checkpoint keeps its own verdict)."""
        return verdict_of(self.findings)


@frozen
class Diff:
    """Two checkpoints gain by gain; with ``max_change``, a gain that moved more (or is in one
    checkpoint only) is a ``gain-changed``/``gain-only-in-one`` finding (fail)."""

    a: AuditReport
    b: AuditReport
    rows: tuple[GainDiff, ...]
    max_change: float | None = None

    @property
    def findings(self) -> tuple[Finding, ...]:
        if self.max_change is None:
            return ()
        out = []
        for d in self.rows:
            c = d.change
            if c is None:
                side = "A" if d.ratio_b is None else "B"
                out.append(Finding(Severity.FAIL, "gain-only-in-one", d.name,
                                   f"present in checkpoint {side} only"))
            elif exceeds(abs(c), self.max_change, max(abs(d.ratio_a or 0), abs(d.ratio_b or 0)),
                         d.dtype):
                out.append(Finding(Severity.FAIL, "gain-changed", d.name,
                                   f"ratio {d.ratio_a:.4f} -> {d.ratio_b:.4f} (change {c:+.4f}, "
                                   f"more than --max-change {self.max_change})"))
        return tuple(out)

    @property
    def verdict(self) -> str:
        return verdict_of(self.findings)
