"""Renderers: one module per output format, each a pure function ``AuditReport -> str``."""

from __future__ import annotations

from ckpt_audit.errors import CkptAuditError
from ckpt_audit.records import AuditReport, Severity

FORMATS = ("table", "json", "markdown", "junit")


def render(report: AuditReport, fmt: str = "table", *, width: int | None = None,
           fail_on: Severity = Severity.FAIL, show: int = 20) -> str:
    """Render ``report`` as ``table`` (Rich), ``json``, ``markdown`` or ``junit``."""
    if fmt == "json":
        from ckpt_audit.report.json_report import render_json

        return render_json(report)
    if fmt == "markdown":
        from ckpt_audit.report.markdown import render_markdown

        return render_markdown(report, show=show)
    if fmt == "junit":
        from ckpt_audit.report.junit import render_junit

        return render_junit(report, fail_on=fail_on)
    if fmt == "table":
        from ckpt_audit.report.table import render_table

        return render_table(report, width=width, show=show)
    raise CkptAuditError(f"unknown output format {fmt!r}; choose one of {', '.join(FORMATS)}")
