"""The JSON report (schema ``ckpt-audit.audit/1``): the contract CI consumers depend on.

Non-finite floats become ``null`` (JSON has no NaN). Fields may be added; these never change:
checkpoint, format, d_model, verdict, norms[name, role, layer, dim, dtype, convention, norm,
ratio, min, max, mean, std, nonfinite, status, severity], findings[severity, code, tensor,
message].
"""

from __future__ import annotations

import json
import math
from typing import Any

from ckpt_audit.records import AuditReport, NormRecord

SCHEMA = "ckpt-audit.audit/1"


def _num(x: float) -> float | None:
    return x if math.isfinite(x) else None


def norm_to_dict(rec: NormRecord) -> dict[str, Any]:
    s = rec.stats
    return {
        "name": rec.name, "role": rec.role.value, "layer": rec.layer, "dim": s.dim,
        "dtype": rec.dtype, "convention": rec.convention.value, "norm": _num(s.norm),
        "ratio": _num(s.ratio), "min": _num(s.min), "max": _num(s.max), "mean": _num(s.mean),
        "std": _num(s.std), "nonfinite": s.nonfinite, "near_zero": s.near_zero,
        "extreme": [[i, _num(v)] for i, v in s.extreme],
        "status": rec.status.value, "severity": rec.severity.value,
        "reference_norm": None if rec.reference_norm is None else _num(rec.reference_norm),
    }


def report_to_dict(report: AuditReport) -> dict[str, Any]:
    """The report as plain JSON-ready data."""
    final = report.final
    return {
        "schema": SCHEMA,
        "checkpoint": report.checkpoint,
        "format": report.format,
        "d_model": report.d_model,
        "d_model_source": report.d_model_source,
        "init_norm": math.sqrt(report.d_model) if report.d_model else None,
        "convention": report.convention.value,
        "policy": report.policy_name,
        "verdict": report.verdict,
        "final": final.name if final else None,
        "final_ratio": _num(final.stats.ratio) if final else None,
        "tensors": report.tensors_total,
        "bytes_read": report.bytes_read,
        "norms": [norm_to_dict(r) for r in report.norms],
        "skipped": [
            {"name": t.name, "dtype": t.dtype, "shape": list(t.shape), "reason": t.reason}
            for t in report.skipped
        ],
        "findings": [
            {"severity": f.severity.value, "code": f.code, "tensor": f.tensor,
             "message": f.message}
            for f in report.findings
        ],
        **{k: v for k, v in report.extra.items() if k not in {"device"}},
    }


def render_json(report: AuditReport) -> str:
    return json.dumps(report_to_dict(report), indent=2, allow_nan=False) + "\n"
