"""The Markdown report (for a CI step summary or a pull-request comment)."""

from __future__ import annotations

from typing import Any

from ckpt_audit.errors import escape
from ckpt_audit.records import AuditReport
from ckpt_audit.report.summary import by_role, fmt_norm, fmt_ratio, offending, other_findings


def md_cell(s: str) -> str:
    """An untrusted string made safe for a Markdown cell: controls escaped, pipes quoted."""
    return escape(s).replace("|", "\\|").replace("`", "'")


def render_markdown(report: AuditReport, *, show: int = 20) -> str:
    lines = [f"## ckpt-audit: `{md_cell(report.checkpoint)}` — **{report.verdict.upper()}**", ""]
    dm = f"{report.d_model} ({report.d_model_source})" if report.d_model else "unknown"
    lines.append(f"format `{report.format}` · d_model {dm} · convention "
                 f"`{report.convention.value}` · policy `{report.policy_name}` · "
                 f"{len(report.norms)} gains")
    final = report.final
    if final is not None:
        lines += ["", f"Final norm `{md_cell(final.name)}`: ‖γ‖₂ = "
                      f"{fmt_norm(final.stats.norm)}, ratio "
                      f"**{fmt_ratio(final.stats.ratio)}** → {final.status.value}"]
    rows = by_role(report)
    if rows:
        lines += ["", "| role | gains | min ratio | max ratio | statuses | worst |",
                  "|---|---:|---:|---:|---|---|"]
        for r in rows:
            st = ", ".join(f"{k} {v}" for k, v in r.statuses.items())
            lines.append(f"| {r.role.value} | {r.count} | {fmt_ratio(r.min_ratio)} | "
                         f"{fmt_ratio(r.max_ratio)} | {st} | {r.worst.value} |")
    bad = offending(report)
    if bad:
        lines += ["", "| tensor | role | layer | dim | ‖γ‖₂ | ratio | status | severity |",
                  "|---|---|---:|---:|---:|---:|---|---|"]
        for b in bad[:show]:
            lines.append(f"| `{md_cell(b.name)}` | {b.role.value} | "
                         f"{'' if b.layer is None else b.layer} | {b.stats.dim} | "
                         f"{fmt_norm(b.stats.norm)} | {fmt_ratio(b.stats.ratio)} | "
                         f"{b.status.value} | {b.severity.value} |")
        if len(bad) > show:
            lines.append(f"\n… and {len(bad) - show} more.")
    others = other_findings(report, bad)
    if others:
        lines += ["", "Findings:"]
        for f in others:
            where = f" `{md_cell(f.tensor)}`" if f.tensor else ""
            lines.append(f"- **{f.severity.value}** {f.code}{where}: {md_cell(f.message)}")
    return "\n".join(lines) + "\n"


def audit_markdown(doc: Any, opts: Any) -> str:
    """Entry point of the dispatch: the report, then the acceptance figures when measured."""
    text = render_markdown(doc.report, show=opts.show)
    if doc.acceptance is not None:
        from ckpt_audit.report.accept import summary_markdown

        text += summary_markdown(dict(doc.acceptance))
    return text
