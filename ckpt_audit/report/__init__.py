"""Renderers for every document ckpt-audit writes, behind one dispatch.

A *document* is a typed result: :class:`AuditDocument` (one checkpoint, with the MTP acceptance
figures when a probe was run), :class:`~ckpt_audit.runs.trend.Trend`,
:class:`~ckpt_audit.runs.compare.Comparison` or :class:`~ckpt_audit.runs.compare.Diff`. Each
renders in every format of :data:`FORMATS` through :func:`render` (pure: document → text);
:func:`draw` prints the table to a (colour) console. Renderer modules are imported when used, so a
JSON report never imports Rich.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import field
from typing import TYPE_CHECKING, Any

from ckpt_audit.errors import CkptAuditError
from ckpt_audit.records import AuditReport, Finding, Severity, frozen

if TYPE_CHECKING:
    from rich.console import Console

FORMATS = ("table", "json", "markdown", "junit", "html")


@frozen
class AuditDocument:
    """One audited checkpoint, plus the MTP acceptance summary when ``--probe`` was given."""

    report: AuditReport
    acceptance: Mapping[str, Any] | None = field(default=None, compare=False, hash=False)

    @property
    def findings(self) -> tuple[Finding, ...]:
        return self.report.findings

    @property
    def verdict(self) -> str:
        return self.report.verdict


@frozen
class RenderOptions:
    """What a renderer may be told: table width, JUnit threshold, rows to list."""

    width: int | None = None
    fail_on: Severity = Severity.FAIL
    show: int = 20
    #: The policy's bands for the final role as ``(status, lo, hi)`` ratios (HTML shading).
    bands: tuple[tuple[str, float | None, float | None], ...] = ()


#: (document kind, format) -> "module:function" under ckpt_audit.report; every function takes
#: ``(document, RenderOptions)``; "table" entries draw on a Rich console instead of returning text.
RENDERERS: dict[tuple[str, str], str] = {
    ("audit", "table"): "table:draw_audit",
    ("audit", "json"): "json_report:audit_json",
    ("audit", "markdown"): "markdown:audit_markdown",
    ("audit", "junit"): "junit:audit_junit",
    ("audit", "html"): "html:audit_html",
    ("trend", "table"): "runs:draw_trend",
    ("trend", "json"): "json_report:trend_json",
    ("trend", "markdown"): "runs:trend_md",
    ("trend", "junit"): "junit:trend_junit",
    ("trend", "html"): "html:trend_html",
    ("compare", "table"): "runs:draw_compare",
    ("compare", "json"): "json_report:compare_json",
    ("compare", "markdown"): "runs:compare_md",
    ("compare", "junit"): "junit:compare_junit",
    ("compare", "html"): "html:compare_html",
    ("diff", "table"): "runs:draw_diff",
    ("diff", "json"): "json_report:diff_json",
    ("diff", "markdown"): "runs:diff_md",
    ("diff", "junit"): "junit:diff_junit",
    ("diff", "html"): "html:diff_html",
}


def kind_of(doc: object) -> str:
    """``audit``, ``trend``, ``compare`` or ``diff``."""
    if isinstance(doc, AuditDocument):  # first: an audit never imports the run modules
        return "audit"
    from ckpt_audit.runs.compare import Comparison, Diff
    from ckpt_audit.runs.trend import Trend

    for cls, kind in ((Trend, "trend"), (Comparison, "compare"), (Diff, "diff")):
        if isinstance(doc, cls):
            return kind
    raise TypeError(f"not a ckpt-audit document: {type(doc).__name__}")


def document_findings(doc: object) -> tuple[Finding, ...]:
    """The findings that decide ``doc``'s verdict (a trend's: every checkpoint's)."""
    if kind_of(doc) == "trend":
        return (tuple(f for r in doc.results for f in r.findings)  # type: ignore[attr-defined]
                + tuple(doc.findings))  # type: ignore[attr-defined]
    return tuple(doc.findings)  # type: ignore[attr-defined]


def _renderer(doc: object, fmt: str) -> Callable[..., Any]:
    import importlib

    if fmt not in FORMATS:
        raise CkptAuditError(f"unknown output format {fmt!r}; choose one of {', '.join(FORMATS)}")
    module, func = RENDERERS[(kind_of(doc), fmt)].split(":")
    return getattr(importlib.import_module(f"ckpt_audit.report.{module}"), func)  # type: ignore[no-any-return]


def render(doc: object, fmt: str = "table", opts: RenderOptions | None = None) -> str:
    """``doc`` as text in ``fmt`` (one of :data:`FORMATS`)."""
    opts = opts or RenderOptions()
    if fmt == "table":
        from ckpt_audit.report.runs import to_text

        return to_text(lambda con: draw(doc, con, opts), opts.width)
    return str(_renderer(doc, fmt)(doc, opts))


def draw(doc: object, con: Console, opts: RenderOptions | None = None) -> None:
    """Print ``doc``'s table to ``con`` (colour on a terminal)."""
    _renderer(doc, "table")(doc, con, opts or RenderOptions())


def render_report(report: AuditReport, fmt: str = "table", *, width: int | None = None,
                  fail_on: Severity = Severity.FAIL, show: int = 20) -> str:
    """Shortcut for one :class:`~ckpt_audit.records.AuditReport`."""
    return render(AuditDocument(report), fmt, RenderOptions(width, fail_on, show))
