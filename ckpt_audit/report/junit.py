"""JUnit XML: one test case per gain plus one per checkpoint-level finding.

A case fails when its worst finding is at or above ``--fail-on``; lesser findings go to
``system-out`` so CI systems show them without failing the build.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

from ckpt_audit.errors import escape
from ckpt_audit.records import AuditReport, Finding, Severity
from ckpt_audit.report.summary import fmt_norm, fmt_ratio


def render_junit(report: AuditReport, *, fail_on: Severity = Severity.FAIL) -> str:
    by_tensor: dict[str | None, list[Finding]] = {}
    for f in report.findings:
        by_tensor.setdefault(f.tensor, []).append(f)
    suite = ET.Element("testsuite", name=f"ckpt-audit {escape(report.checkpoint)}")
    failures = 0
    cases = 0

    def case(name: str, classname: str, fs: list[Finding], out: str) -> None:
        nonlocal failures, cases
        cases += 1
        tc = ET.SubElement(suite, "testcase", name=escape(name), classname=classname)
        gating = [f for f in fs if f.severity.rank >= fail_on.rank]
        if gating:
            failures += 1
            el = ET.SubElement(tc, "failure", message=escape(gating[0].message),
                               type=gating[0].code)
            el.text = "\n".join(f"[{f.severity.value}] {f.code}: {escape(f.message)}"
                                for f in gating)
        rest = [f for f in fs if f not in gating]
        text = out + "".join(f"\n[{f.severity.value}] {f.code}: {escape(f.message)}"
                             for f in rest)
        if text:
            ET.SubElement(tc, "system-out").text = text

    for rec in report.norms:
        case(rec.name, f"ckpt_audit.{rec.role.value}", by_tensor.pop(rec.name, []),
             f"norm={fmt_norm(rec.stats.norm)} ratio={fmt_ratio(rec.stats.ratio)} "
             f"status={rec.status.value}")
    for tensor, fs in by_tensor.items():
        for f in fs:
            case(f"{f.code}{': ' + tensor if tensor else ''}", "ckpt_audit.checkpoint", [f], "")
    if not report.norms and not report.findings:
        case("checkpoint", "ckpt_audit.checkpoint", [], "no gains")
    suite.set("tests", str(cases))
    suite.set("failures", str(failures))
    suite.set("errors", "0")
    ET.indent(suite)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(suite, "unicode") + "\n"
