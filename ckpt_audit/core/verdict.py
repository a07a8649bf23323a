"""Exit codes as a pure function, so the CLI only wires (and the rule is tested on its own).

0: no finding at or above ``fail_on``; 1: at least one; 2 is reserved for input errors and is
decided where the error is caught.
"""

from __future__ import annotations

from collections.abc import Iterable

from ckpt_audit.records import AuditReport, Finding, Severity

EXIT_OK = 0
EXIT_FINDINGS = 1


def parse_fail_on(value: str) -> Severity:
    """``--fail-on`` accepts ``warn`` or ``fail`` (and ``info`` for the strictest gates)."""
    try:
        sev = Severity(value)
    except ValueError:
        sev = Severity.OK
    if sev is Severity.OK:
        from ckpt_audit.errors import CkptAuditError

        raise CkptAuditError(f"--fail-on must be info, warn or fail, not {value!r}")
    return sev


def gating_findings(findings: Iterable[Finding], fail_on: Severity) -> list[Finding]:
    """The findings at or above ``fail_on``."""
    return [f for f in findings if f.severity.rank >= fail_on.rank]


def exit_code(reports: Iterable[AuditReport], fail_on: Severity = Severity.FAIL) -> int:
    """1 if any report has a finding at or above ``fail_on``, else 0."""
    for rep in reports:
        if gating_findings(rep.findings, fail_on):
            return EXIT_FINDINGS
    return EXIT_OK
