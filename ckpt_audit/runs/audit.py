"""Auditing the checkpoints of a run: one :class:`CheckpointResult` per checkpoint.

This is the glue between :mod:`ckpt_audit.runs.discovery` (which checkpoints exist, which are
complete) and
the audit core (:func:`ckpt_audit.core.audit.audit_checkpoint`, called, never re-implemented). An
incomplete checkpoint is not audited and gets the verdict ``incomplete``; a checkpoint whose audit
raised a :class:`~ckpt_audit.errors.CkptAuditError` gets ``error`` with the message, so one bad
checkpoint never stops a trend over a thousand good ones.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ckpt_audit.errors import CkptAuditError
from ckpt_audit.records import AuditReport, Finding, NormRecord, Role, Verdict, frozen, verdict_of
from ckpt_audit.runs.discovery import RunCheckpoint


@frozen
class CheckpointResult:
    """A run checkpoint with its audit report (``None`` when incomplete or on error).

    ``extra`` holds findings added on top of the audit (baseline drift, trend jumps).
    """

    checkpoint: RunCheckpoint
    report: AuditReport | None
    error: str | None = None
    extra: tuple[Finding, ...] = ()

    @property
    def findings(self) -> tuple[Finding, ...]:
        return (self.report.findings if self.report else ()) + self.extra

    @property
    def verdict(self) -> Verdict:
        """``incomplete``, ``error``, else the worst of the audit's and the extra findings."""
        if not self.checkpoint.complete:
            return Verdict.INCOMPLETE
        if self.error is not None or self.report is None:
            return Verdict.ERROR
        return verdict_of(self.findings)

    @property
    def final(self) -> NormRecord | None:
        return self.report.final if self.report else None

    @property
    def final_ratio(self) -> float | None:
        rec = self.final
        return rec.stats.ratio if rec else None

    def gains(self) -> dict[str, NormRecord]:
        """Every audited gain by name."""
        return {r.name: r for r in self.report.norms} if self.report else {}


#: Files inside a checkpoint folder to audit when no reader recognises the folder itself, by
#: layout: DeepSpeed ZeRO-0/1/2 keeps the whole model (under ``module``) in the tensor-parallel
#: rank-0 model-states file; norms are replicated across TP ranks, so rank 0 has them all.
FALLBACK_FILES: dict[str, tuple[str, ...]] = {
    "deepspeed": ("mp_rank_00_model_states.pt",),
}


def audit_one(ckpt: RunCheckpoint, **audit_kwargs: Any) -> CheckpointResult:
    """Audit one complete checkpoint with the audit core; incomplete ones are not opened.

    The folder is given to the audit as it is; when no reader recognises it and the layout has a
    :data:`FALLBACK_FILES` entry that exists, that file is audited instead.
    """
    if not ckpt.complete:
        return CheckpointResult(ckpt, None)
    import os

    from ckpt_audit.core.audit import audit_checkpoint
    from ckpt_audit.errors import DetectionError

    try:
        report = audit_checkpoint(ckpt.path, **audit_kwargs)
    except DetectionError as exc:
        for name in FALLBACK_FILES.get(ckpt.layout, ()):
            target = os.path.join(ckpt.path, name)
            if os.path.isfile(target):
                try:
                    return CheckpointResult(ckpt, audit_checkpoint(target, **audit_kwargs))
                except CkptAuditError as inner:
                    return CheckpointResult(ckpt, None, str(inner))
        return CheckpointResult(ckpt, None, str(exc))
    except CkptAuditError as exc:
        return CheckpointResult(ckpt, None, str(exc))
    return CheckpointResult(ckpt, report)


def audit_checkpoints(checkpoints: Sequence[RunCheckpoint],
                      **audit_kwargs: Any) -> tuple[CheckpointResult, ...]:
    """:func:`audit_one` over ``checkpoints`` in order."""
    return tuple(audit_one(ckpt, **audit_kwargs) for ckpt in checkpoints)




def tracked_names(results: Sequence[CheckpointResult], roles: Sequence[str],
                  pattern: str | None = None) -> tuple[str, ...]:
    """Names of the gains to follow over a run, final first, then MTP, then by layer.

    With ``pattern`` (a regex), every gain whose name matches; otherwise every gain whose role is
    in ``roles`` (``"all"`` takes every gain), in any audited checkpoint.
    """
    import re

    rx = re.compile(pattern) if pattern else None
    seen: dict[str, NormRecord] = {}
    for res in results:
        for rec in res.gains().values():
            if rec.name in seen:
                continue
            wanted = rx.search(rec.name) if rx else ("all" in roles or rec.role.value in roles)
            if wanted:
                seen[rec.name] = rec
    return tuple(sorted(seen, key=lambda n: gain_sort_key(seen[n])))


def gain_sort_key(rec: NormRecord) -> tuple[int, int, str]:
    """Final norm first, then MTP, then by layer (layer-less last within a role), then name."""
    order = {Role.FINAL: 0, Role.MTP: 1}
    return (order.get(rec.role, 2), rec.layer if rec.layer is not None else 1 << 30, rec.name)
