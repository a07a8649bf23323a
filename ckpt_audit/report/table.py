"""The Rich terminal report: a header, the final norm, a summary by role, the offending gains
and every other finding. Pinned to a width when asked (tests use a fixed width)."""

from __future__ import annotations

import io
import math
from typing import Any

from rich.console import Console
from rich.markup import escape as markup_escape
from rich.text import Text

from ckpt_audit.errors import escape
from ckpt_audit.records import AuditReport, Severity, Verdict
from ckpt_audit.report.fit import Column, add_row, fit_table
from ckpt_audit.report.summary import by_role, fmt_norm, fmt_ratio, offending, other_findings

STYLE = {Severity.OK: "green", Severity.INFO: "cyan", Severity.WARN: "yellow",
         Severity.FAIL: "bold red"}
VERDICT_STYLE = {Verdict.PASS: "bold green", Verdict.WARN: "bold yellow", Verdict.FAIL: "bold red",
                 Verdict.ERROR: "bold red", Verdict.INCOMPLETE: "magenta"}


def render_table(report: AuditReport, *, width: int | None = None, show: int = 20) -> str:
    console = Console(width=width or 120, record=True, file=io.StringIO(), force_terminal=False,
                      color_system=None, soft_wrap=False)
    _print(console, report, show)
    return console.export_text()


def print_table(report: AuditReport, console: Console, show: int = 20) -> None:
    """Print straight to a (colour) console."""
    _print(console, report, show)


def _print(console: Console, report: AuditReport, show: int) -> None:
    verdict = Text(report.verdict.upper(), style=VERDICT_STYLE[report.verdict])
    head = Text.assemble(("ckpt-audit ", "bold"), escape(report.checkpoint), "  ", verdict)
    console.print(head)
    dm = (f"d_model {report.d_model} ({report.d_model_source}), √d = "
          f"{math.sqrt(report.d_model):.4f}" if report.d_model else "d_model unknown")
    console.print(f"format {report.format} · {dm} · convention {report.convention.value} · "
                  f"policy {report.policy_name} · {len(report.norms)} gains of "
                  f"{report.tensors_total} tensors · {report.bytes_read:,} bytes read")
    final = report.final
    if final is not None:
        s = final.stats
        console.print(Text.assemble(
            "final norm ", (escape(final.name), "bold"), f": ‖γ‖₂ = {fmt_norm(s.norm)}, ratio ",
            (fmt_ratio(s.ratio), "bold"), " → ", (final.status.value, STYLE[final.severity])))
    rows = by_role(report)
    cols = [Column("role"), Column("gains", "number", "right", 2),
            Column("min ratio", "number", "right"), Column("max ratio", "number", "right"),
            Column("statuses"), Column("worst", drop=1)]
    for row in rows:
        add_row(cols, row.role.value, str(row.count), fmt_ratio(row.min_ratio),
                fmt_ratio(row.max_ratio), ", ".join(f"{k} {v}" for k, v in row.statuses.items()),
                Text(row.worst.value, style=STYLE[row.worst]))
    if report.norms:
        console.print(fit_table(cols, console.width, title="Gains by role",
                                title_justify="left"))
    bad = offending(report)
    if bad:
        cols = [Column("tensor", "name"), Column("role", drop=4),
                Column("layer", "number", "right", 3), Column("dim", "number", "right", 7),
                Column("‖γ‖₂", "number", "right", 5), Column("ratio", "number", "right"),
                Column("status"), Column("severity", drop=6)]
        for r in bad[:show]:
            add_row(cols, markup_escape(escape(r.name)), r.role.value,
                    "" if r.layer is None else str(r.layer),
                    str(r.stats.dim), fmt_norm(r.stats.norm), fmt_ratio(r.stats.ratio),
                    r.status.value, Text(r.severity.value, style=STYLE[r.severity]))
        console.print(fit_table(cols, console.width, title="Gains outside the ok bands",
                                title_justify="left"))
        if len(bad) > show:
            console.print(f"… and {len(bad) - show} more (use --show or --format json)")
    for f in other_findings(report, bad):
        where = f"{f.tensor}: " if f.tensor else ""
        console.print(Text.assemble((f"[{f.severity.value}] ", STYLE[f.severity]),
                                    escape(f"{f.code}: {where}{f.message}")))



def draw_audit(doc: Any, console: Console, opts: Any) -> None:
    """Entry point of the dispatch: the report, then the acceptance figures when measured."""
    _print(console, doc.report, opts.show)
    if doc.acceptance is not None:
        from ckpt_audit.report.accept import print_summary

        print_summary(dict(doc.acceptance), console)
