"""JUnit XML, one writer for every command: ``<testsuites>`` with one ``<testsuite>`` per
checkpoint, one test case per gain plus one per finding that names no gain (or a gain the
checkpoint lacks).

A case fails when one of its findings is at or above ``--fail-on``; lesser findings go to
``system-out``, so CI shows them without failing the build. An incomplete checkpoint is one
``<skipped>`` case (not passing, not failing); one that could not be read is one ``<error>``.
Findings of a whole run (trend jumps, a diverging run) form a suite of their own.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from typing import Any

from ckpt_audit.errors import escape
from ckpt_audit.records import AuditReport, Finding, Severity, frozen
from ckpt_audit.report.findings import finding_line
from ckpt_audit.report.summary import fmt_norm, fmt_ratio
from ckpt_audit.runs.audit import CheckpointResult
from ckpt_audit.runs.compare import Comparison, Diff
from ckpt_audit.runs.trend import Trend


@frozen
class Case:
    """One test case: its findings decide pass/fail; ``out`` is shown either way."""

    name: str
    classname: str
    findings: tuple[Finding, ...] = ()
    out: str = ""
    skipped: str | None = None
    error: str | None = None


@frozen
class Suite:
    """A JUnit test suite: a name and its cases."""

    name: str
    cases: tuple[Case, ...]


def report_cases(report: AuditReport, findings: Sequence[Finding] | None = None) -> list[Case]:
    """A case per gain (its own findings attached), then one per remaining finding."""
    by_tensor: dict[str | None, list[Finding]] = {}
    for f in report.findings if findings is None else findings:
        by_tensor.setdefault(f.tensor, []).append(f)
    cases = [Case(rec.name, f"ckpt_audit.{rec.role.value}", tuple(by_tensor.pop(rec.name, [])),
                  f"norm={fmt_norm(rec.stats.norm)} ratio={fmt_ratio(rec.stats.ratio)} "
                  f"status={rec.status.value}") for rec in report.norms]
    cases += [Case(t.name, "ckpt_audit.skipped", skipped=f"not audited: {t.reason}")
              for t in report.skipped]
    cases += finding_cases([f for fs in by_tensor.values() for f in fs])
    if not cases:
        cases.append(Case("checkpoint", "ckpt_audit.checkpoint", (), "no gains"))
    return cases


def finding_cases(findings: Sequence[Finding], classname: str = "ckpt_audit.checkpoint"
                  ) -> list[Case]:
    """One case per finding, named by its code (and tensor)."""
    return [Case(f"{f.code}{': ' + f.tensor if f.tensor else ''}", classname, (f,))
            for f in findings]


def figures_case(name: str, figures: Mapping[str, Any]) -> Case:
    """A passing case that carries figures (e.g. MTP acceptance) in ``system-out``."""
    return Case(name, "ckpt_audit.figures", (),
                "\n".join(f"{k}={v}" for k, v in figures.items()))


def render_suites(suites: Sequence[Suite], fail_on: Severity = Severity.FAIL) -> str:
    """The XML document."""
    root = ET.Element("testsuites", name="ckpt-audit")
    totals = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    for suite in suites:
        counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
        ts = ET.SubElement(root, "testsuite", name=escape(suite.name))
        for case in suite.cases:
            counts["tests"] += 1
            _case(ts, case, fail_on, counts)
        for k, v in counts.items():
            ts.set(k, str(v))
            totals[k] += v
    for k, v in totals.items():
        root.set(k, str(v))
    ET.indent(root)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, "unicode") + "\n"


def _case(parent: ET.Element, case: Case, fail_on: Severity, counts: dict[str, int]) -> None:
    # every untrusted string escaped (control characters are not even valid XML)
    tc = ET.SubElement(parent, "testcase", name=escape(case.name), classname=case.classname)
    if case.skipped is not None:
        counts["skipped"] += 1
        ET.SubElement(tc, "skipped", message=escape(case.skipped))
        return
    if case.error is not None:
        counts["errors"] += 1
        ET.SubElement(tc, "error", message=escape(case.error))
        return
    gating = [f for f in case.findings if f.severity.rank >= fail_on.rank]
    if gating:
        counts["failures"] += 1
        el = ET.SubElement(tc, "failure", message=escape(gating[0].message),
                           type=gating[0].code)
        el.text = "\n".join(escape(finding_line(f)) for f in gating)
    rest = [f for f in case.findings if f not in gating]
    text = "\n".join([escape(case.out)] * bool(case.out) + [escape(finding_line(f))
                                                              for f in rest])
    if text:
        ET.SubElement(tc, "system-out").text = text


def result_suite(res: CheckpointResult) -> Suite:
    """One checkpoint of a run: its gains and findings, or one skipped/error case."""
    name = f"step {res.checkpoint.step}: {res.checkpoint.path}"
    if not res.checkpoint.complete:
        return Suite(name, (Case("checkpoint", "ckpt_audit.checkpoint",
                                 skipped="incomplete: " + "; ".join(res.checkpoint.problems)),))
    if res.report is None:
        return Suite(name, (Case("checkpoint", "ckpt_audit.checkpoint",
                                 error=res.error or "audit error"),))
    return Suite(name, tuple(report_cases(res.report, res.findings)))


def run_suites(results: Sequence[CheckpointResult], run_findings: Sequence[Finding] = (),
               label: str = "run") -> list[Suite]:
    """A suite per checkpoint, then one for findings about the run as a whole."""
    suites = [result_suite(r) for r in results]
    if run_findings:
        suites.append(Suite(label, tuple(finding_cases(run_findings, "ckpt_audit.run"))))
    return suites


# Entry points of the dispatch (ckpt_audit.report.RENDERERS): (document, options) -> text.

def audit_junit(doc: Any, opts: Any) -> str:
    cases = report_cases(doc.report)
    if doc.acceptance is not None:
        acc = doc.acceptance
        cases.append(figures_case("mtp-acceptance", {
            "layout": acc.get("layout"), "positions": acc.get("positions"),
            "expected_tokens_per_step": acc.get("expected_tokens_per_step"),
            **{f"depth{d.get('depth')}.greedy_acceptance": d.get("greedy_acceptance")
               for d in acc.get("depths", [])}}))
    return render_suites([Suite(f"ckpt-audit {doc.report.checkpoint}", tuple(cases))],
                         opts.fail_on)


def trend_junit(doc: Trend, opts: Any) -> str:
    return render_suites(run_suites(doc.results, doc.findings), opts.fail_on)


def compare_junit(doc: Comparison, opts: Any) -> str:
    suites = [Suite(f"{label} {s.name}", s.cases) for label, results in doc.runs
              for s in run_suites(results)]
    suites.append(Suite("compare", tuple(finding_cases(doc.findings, "ckpt_audit.run"))
                        or (Case("runs within tolerance", "ckpt_audit.run"),)))
    return render_suites(suites, opts.fail_on)


def diff_junit(doc: Diff, opts: Any) -> str:
    """A case per gain (failing on the diff's own findings); each side's audit findings, which do
    not decide ``diff``'s exit code, are shown in ``system-out``."""
    mine: dict[str | None, list[Finding]] = {}
    for f in doc.findings:
        mine.setdefault(f.tensor, []).append(f)
    sides: dict[str | None, list[str]] = {}
    for side, rep in (("A", doc.a), ("B", doc.b)):
        for f in rep.findings:
            sides.setdefault(f.tensor, []).append(f"{side}: {finding_line(f)}")
    cases = [Case(d.name, "ckpt_audit.diff", tuple(mine.pop(d.name, [])),
                  "\n".join([f"ratio_a={d.ratio_a} ratio_b={d.ratio_b} change={d.change}",
                             *sides.pop(d.name, [])])) for d in doc.rows]
    cases += finding_cases([f for fs in mine.values() for f in fs], "ckpt_audit.diff")
    cases += [Case("checkpoint", "ckpt_audit.diff", (), "\n".join(lines))
              for lines in sides.values()]
    return render_suites([Suite(f"diff {doc.a.checkpoint} {doc.b.checkpoint}", tuple(cases))],
                         opts.fail_on)
