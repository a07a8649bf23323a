"""Shared, format-independent summaries used by the table and Markdown renderers."""

from __future__ import annotations

import math

from ckpt_audit.records import AuditReport, Finding, NormRecord, Role, Severity, Status, frozen

STATUS_ORDER = {s: i for i, s in enumerate(Status)}


@frozen
class RoleSummary:
    """The gains of one role: how many, their ratio range, the worst severity, counts by status."""

    role: Role
    count: int
    min_ratio: float
    max_ratio: float
    worst: Severity
    statuses: dict[str, int]


def by_role(report: AuditReport) -> list[RoleSummary]:
    """One row per role present: count, ratio range, worst severity, count per status."""
    out = []
    for role in Role:
        recs = [r for r in report.norms if r.role is role]
        if not recs:
            continue
        ratios = [r.stats.ratio for r in recs if math.isfinite(r.stats.ratio)]
        statuses: dict[str, int] = {}
        for r in sorted(recs, key=lambda r: STATUS_ORDER[r.status]):
            statuses[r.status.value] = statuses.get(r.status.value, 0) + 1
        out.append(RoleSummary(role, len(recs), min(ratios, default=math.nan),
                               max(ratios, default=math.nan),
                               max((r.severity for r in recs), key=lambda s: s.rank), statuses))
    return out


def offending(report: AuditReport) -> list[NormRecord]:
    """Gains with a severity above ok, worst first, then farthest from ratio 1."""
    def key(r: NormRecord) -> tuple[int, float]:
        dist = abs(math.log(r.stats.ratio)) if r.stats.ratio > 0 and math.isfinite(
            r.stats.ratio) else math.inf
        return (-r.severity.rank, -dist)

    return sorted((r for r in report.norms if r.severity is not Severity.OK), key=key)


def other_findings(report: AuditReport, listed: list[NormRecord]) -> list[Finding]:
    """Findings not already shown as a row of the offending-gains table (every one of them must
    reach the reader: baseline drift, MTP incompleteness, init mismatch, ...)."""
    shown = {(r.name, r.status.value) for r in listed}
    return [f for f in report.findings if (f.tensor, f.code) not in shown]


def fmt_ratio(x: float) -> str:
    return f"{x:.3f}" if math.isfinite(x) else "nan"


def fmt_norm(x: float) -> str:
    return f"{x:.4f}" if math.isfinite(x) else "nan"


#: Said under the report when the verdict rests on the all-ones init and the final gain is out
#: of the ok bands (docs/POLICY.md "reference").
INIT_REFERENCE_NOTE = ("the band assumes training from all-ones gains; for a fine-tune or a "
                       "released model, pass --reference BASE")


def reference_line(report: AuditReport) -> str:
    """``ratios to √n (all-ones init)`` or ``ratios to the gains of REF``."""
    ref = report.extra.get("reference") or {"kind": "init"}
    if ref.get("kind") == "checkpoint":
        return f"reference {ref.get('path')}: ratio = ‖γ‖₂ / ‖γ_REF‖₂ of the same-named gain"
    return "reference init: ratio = ‖γ‖₂ / √n (all-ones gains)"


def init_reference_note(report: AuditReport) -> str | None:
    """The note above, when it applies."""
    ref = report.extra.get("reference") or {"kind": "init"}
    final = report.final
    if ref.get("kind") == "init" and final is not None and final.severity is not Severity.OK:
        return INIT_REFERENCE_NOTE
    return None
