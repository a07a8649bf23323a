"""A finding, the same way in every format: one dict (JSON), one line (text, JUnit, Markdown).

Every renderer goes through these two functions, so a finding can never reach one format and
miss another (tests/report/test_every_finding.py renders every code through every renderer).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ckpt_audit.records import Finding, Severity


def finding_to_dict(f: Finding) -> dict[str, Any]:
    """``{"severity", "code", "tensor", "message"}`` (schema: docs/SCHEMAS.md)."""
    return {"severity": f.severity.value, "code": f.code, "tensor": f.tensor,
            "message": f.message}


def finding_line(f: Finding) -> str:
    """``[fail] collapse model.norm.weight: ratio 0.25 …`` (the tensor only when there is one)."""
    where = f" {f.tensor}" if f.tensor else ""
    return f"[{f.severity.value}] {f.code}{where}: {f.message}"


def worth_showing(findings: Iterable[Finding]) -> list[Finding]:
    """Findings above ``ok`` (what every text format lists), in their order."""
    return [f for f in findings if f.severity.rank > Severity.OK.rank]
