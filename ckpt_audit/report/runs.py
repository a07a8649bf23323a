"""Terminal (Rich) and Markdown renderings of trends, comparisons and diffs.

Pure functions of the objects in :mod:`ckpt_audit.runs.trend` and :mod:`ckpt_audit.runs.compare`;
the
``*_text`` variants render to a string at a fixed width (tests pin the width).
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Sequence
from typing import Any

from rich.console import Console
from rich.text import Text

from ckpt_audit.records import Finding
from ckpt_audit.report.findings import finding_line, worth_showing
from ckpt_audit.report.fit import Column, add_row, elide, fit_table
from ckpt_audit.report.markdown import md_cell as _md
from ckpt_audit.report.table import STYLE, VERDICT_STYLE
from ckpt_audit.runs.audit import CheckpointResult
from ckpt_audit.runs.compare import Comparison, Diff, audited_by_step, matching_steps
from ckpt_audit.runs.trend import Trend, out_of_band, series, sparkline


def _r(x: float | None) -> str:
    if x is None:
        return "—"
    return f"{x:.3f}" if math.isfinite(x) else str(x)


def to_text(draw: Callable[[Console], None], width: int | None) -> str:
    """Render with ``draw`` into plain text at ``width`` columns (120 when unset)."""
    con = Console(width=width or 120, record=True, file=io.StringIO(), force_terminal=False,
                  color_system=None, soft_wrap=False)
    draw(con)
    return con.export_text()


#: Tracked gains shown as columns of the checkpoint table; the rest only in the gains table.
MAX_GAIN_COLUMNS = 3


def print_trend(trend: Trend, con: Console) -> None:
    """Per checkpoint: step, verdict, the first tracked gains' ratio and status; then one row per
    tracked gain with its sparkline, range, first step out of band; then jumps."""
    con.print(Text.assemble(("ckpt-audit trend ", "bold"), trend.run, "  ",
                            (trend.verdict.upper(), VERDICT_STYLE.get(trend.verdict, ""))))
    con.print(Text(trend.reference_note))
    shown = trend.tracked[:MAX_GAIN_COLUMNS]
    cols = [Column("step", "number", "right"), Column("checkpoint", "name"), Column("verdict")]
    cols += [Column(elide(name.removesuffix(".weight"), 24), "number", "right",
                    (10 + i) if i else None) for i, name in enumerate(shown)]
    more = len(trend.tracked) > len(shown)
    if more:
        cols.append(Column("others out of band", "number", "right", 20))
    cols.append(Column("layers median/spread", "number", "right", 5))
    for res in trend.results:
        cells: list[str | Text] = [str(res.checkpoint.step), res.checkpoint.name,
                                   Text(res.verdict, style=VERDICT_STYLE.get(res.verdict, ""))]
        gains = res.gains()
        for name in shown:
            rec = gains.get(name)
            cells.append(f"{_r(rec.stats.ratio)} {rec.status.value}" if rec else "—")
        if more:
            rest = [gains[n] for n in trend.tracked[len(shown):] if n in gains]
            cells.append(f"{sum(out_of_band(r) for r in rest)} of {len(rest)}" if rest else "—")
        col = trend.collective(trend.point(res.checkpoint.step)) if res.report else None
        cells.append(f"{col.median:.3f}/{col.spread:.3f}" if col else "—")
        add_row(cols, *cells)
    con.print(fit_table(cols, con.width, title="Checkpoints", title_justify="left"))
    for res in trend.results:
        if not res.checkpoint.complete:
            con.print(f"[magenta]incomplete[/] {res.checkpoint.name}: "
                      + "; ".join(res.checkpoint.problems))
        elif res.error:
            con.print(f"[red]error[/] {res.checkpoint.name}: {res.error}")
    cols = [Column("trend", "number", drop=1), Column("gain", "name"), Column("role", drop=4),
            Column("first", "number", "right", 3), Column("last", "number", "right"),
            Column("min–max", "number", drop=2), Column("first out of band")]
    for name in trend.tracked:
        values = [r for _, r in series(trend.results, name)]
        finite = [v for v in values if v is not None and math.isfinite(v)]
        role = next((res.gains()[name].role.value for res in trend.results
                     if name in res.gains()), "")
        first = trend.first_out_of_band.get(name)
        add_row(cols, sparkline(values), name, role, _r(finite[0] if finite else None),
                _r(finite[-1] if finite else None),
                f"{min(finite):.3f}–{max(finite):.3f}" if finite else "—",
                Text(f"step {first}", style="bold red") if first is not None else "never")
    con.print(fit_table(cols, con.width, title="Gains over the run (▁ lowest … █ highest ratio)",
                        title_justify="left"))
    channels = [Column("gain", "name"), Column("spread", "number", "right"),
                Column("negative", "number", "right")]
    for name in trend.tracked:
        rec = next((r.gains()[name] for r in reversed(trend.results) if name in r.gains()), None)
        if rec is not None:
            neg = rec.stats.negative
            add_row(channels, name, _r(rec.stats.spread),
                    f"{neg:.1%}" if math.isfinite(neg) else "—")
    if channels[0].cells:
        con.print(fit_table(channels, con.width, title="Channels at the last checkpoint "
                            "(std/RMS, share negative)", title_justify="left"))
    print_findings(trend.findings, con)
    print_checkpoint_findings(trend.results, con)


def print_findings(findings: Sequence[Finding], con: Console, indent: str = "") -> None:
    """Each finding above ok on its own line, coloured by severity."""
    for f in worth_showing(findings):
        con.print(Text.assemble(indent, (f"[{f.severity.value}]", STYLE[f.severity]),
                                finding_line(f).split("]", 1)[1]))


def print_checkpoint_findings(results: Sequence[CheckpointResult], con: Console) -> None:
    """Why each checkpoint has its verdict: its findings, grouped under the checkpoint."""
    for res in results:
        shown = worth_showing(res.findings)
        if shown:
            con.print(f"findings of {res.checkpoint.name} (step {res.checkpoint.step}):")
            print_findings(shown, con, "  ")


def markdown_findings(results: Sequence[CheckpointResult]) -> list[str]:
    """Markdown bullets: every finding above ok of every checkpoint."""
    return [f"- `{_md(res.checkpoint.name)}` {_md(finding_line(f))}"
            for res in results for f in worth_showing(res.findings)]


def trend_markdown(trend: Trend) -> str:
    """A Markdown summary (GitHub step summary) of a trend."""
    lines = [f"## ckpt-audit trend: `{trend.run}` — **{trend.verdict.upper()}**", "",
             _md(trend.reference_note), ""]
    head = ["step", "checkpoint", "verdict", *[f"`{n}`" for n in trend.tracked]]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for res in trend.results:
        gains = res.gains()
        cells = [str(res.checkpoint.step), f"`{res.checkpoint.name}`", res.verdict]
        for n in trend.tracked:
            rec = gains.get(n)
            cells.append(f"{_r(rec.stats.ratio)} {rec.status.value}" if rec else "—")
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    for n in trend.tracked:
        first = trend.first_out_of_band.get(n)
        lines.append(f"- `{n}`: " + (f"first out of band at step **{first}**"
                                     if first is not None else "never out of band"))
    lines += [f"- {_md(finding_line(f))}" for f in worth_showing(trend.findings)]
    for res in trend.results:
        if not res.checkpoint.complete:
            lines.append(f"- incomplete `{res.checkpoint.name}`: "
                         + "; ".join(res.checkpoint.problems))
        elif res.error:
            lines.append(f"- error `{res.checkpoint.name}`: {_md(res.error)}")
    found = markdown_findings(trend.results)
    if found:
        lines += ["", "Findings:", *found]
    return "\n".join(lines) + "\n"


def print_compare(cmp: Comparison, con: Console) -> None:
    """Final-norm ratio of every run at each matching step, then each run's first divergence."""
    runs, tolerance = cmp.runs, cmp.tolerance
    steps = matching_steps([r for _, r in runs])
    by = [audited_by_step(r) for _, r in runs]
    cols = [Column("step", "number", "right")]
    cols += [Column(elide(label, 24), "number", "right", (10 + i) if i > 1 else None)
             for i, (label, _) in enumerate(runs)]
    for s in steps:
        add_row(cols, str(s), *[f"{_r(b[s].final_ratio)} {b[s].verdict}" for b in by])
    con.print(fit_table(cols, con.width,
                        title=f"Final-norm ratio at matching steps (reference: {runs[0][0]})",
                        title_justify="left"))
    if not steps:
        con.print("[yellow]no matching steps[/]: the runs have no audited step in common")
    for (label, _), d in zip(runs[1:], cmp.divergences, strict=True):
        if d is None:
            con.print(f"{label}: every common gain within ±{tolerance} of {runs[0][0]} "
                      "at every matching step")
        else:
            layer = f"layer {d.layer}" if d.layer is not None else d.role
            con.print(f"{label}: first diverges at step {d.step}, {d.name} ({layer}): "
                      f"{d.ratio_reference:.3f} vs {d.ratio_other:.3f} "
                      f"(Δ {d.difference:+.3f}, tolerance {tolerance})")
    for label, results in runs:
        for res in results:
            if worth_showing(res.findings):
                con.print(f"findings of {label} {res.checkpoint.name}:")
                print_findings(res.findings, con, "  ")


def compare_markdown(cmp: Comparison) -> str:
    """The comparison as Markdown (step summary, pull-request comment)."""
    runs = cmp.runs
    steps = matching_steps([r for _, r in runs])
    by = [audited_by_step(r) for _, r in runs]
    lines = [f"## ckpt-audit compare — **{cmp.verdict.upper()}**", "",
             f"Reference: `{_md(runs[0][0])}`; tolerance ±{cmp.tolerance}.", "",
             "| step | " + " | ".join(f"`{_md(label)}`" for label, _ in runs) + " |",
             "|---:|" + "---:|" * len(runs)]
    for s in steps:
        lines.append(f"| {s} | " + " | ".join(f"{_r(b[s].final_ratio)} {b[s].verdict}"
                                              for b in by) + " |")
    lines.append("")
    for f in cmp.findings:
        lines.append(f"- {_md(finding_line(f))}")
    for label, results in runs:
        lines += [f"- `{_md(label)}` " + line[2:] for line in markdown_findings(results)]
    return "\n".join(lines) + "\n"


def print_diff(diff: Diff, con: Console, show: int) -> None:
    """Per gain, both ratios and the change, largest |change| first; then the findings."""
    a, b, rows = diff.a.checkpoint, diff.b.checkpoint, diff.rows
    cols = [Column("tensor", "name"), Column("role", drop=6),
            Column("layer", "number", "right", 5), Column("ratio A", "number", "right", 4),
            Column("ratio B", "number", "right", 3), Column("change", "number", "right"),
            Column("relative", "number", "right", 7), Column("status A→B", drop=8)]
    for d in rows[:show]:
        rel = f"{d.relative:+.1%}" if d.relative is not None and math.isfinite(d.relative) \
            else "—"
        change = f"{d.change:+.4f}" if d.change is not None else "—"
        add_row(cols, d.name, d.role, "" if d.layer is None else str(d.layer), _r(d.ratio_a),
                _r(d.ratio_b), change, rel, f"{d.status_a or '—'} → {d.status_b or '—'}")
    con.print(fit_table(cols, con.width, title=f"Gains: A = {a}, B = {b} (sorted by |change|)",
                        title_justify="left"))
    if len(rows) > show:
        con.print(f"… and {len(rows) - show} more (--show N)")
    print_findings(diff.findings, con)
    for side, rep in (("A", diff.a), ("B", diff.b)):
        if worth_showing(rep.findings):
            con.print(f"findings of {side} ({rep.verdict}):")
            print_findings(rep.findings, con, "  ")


def diff_markdown(diff: Diff, show: int = 30) -> str:
    """The diff as Markdown."""
    lines = [f"## ckpt-audit diff — **{diff.verdict.upper()}**", "",
             f"A = `{_md(diff.a.checkpoint)}` ({diff.a.verdict}), "
             f"B = `{_md(diff.b.checkpoint)}` ({diff.b.verdict})", "",
             "| tensor | role | layer | ratio A | ratio B | change | status A→B |",
             "|---|---|---:|---:|---:|---:|---|"]
    for d in diff.rows[:show]:
        change = f"{d.change:+.4f}" if d.change is not None else "—"
        lines.append(f"| `{_md(d.name)}` | {d.role} | {'' if d.layer is None else d.layer} | "
                     f"{_r(d.ratio_a)} | {_r(d.ratio_b)} | {change} | "
                     f"{d.status_a or '—'} → {d.status_b or '—'} |")
    if len(diff.rows) > show:
        lines.append(f"\n… and {len(diff.rows) - show} more.")
    lines.append("")
    lines += [f"- {_md(finding_line(f))}" for f in diff.findings]
    for side, rep in (("A", diff.a), ("B", diff.b)):
        lines += [f"- {side}: {_md(finding_line(f))}" for f in worth_showing(rep.findings)]
    return "\n".join(lines) + "\n"


# Entry points of the dispatch (ckpt_audit.report.RENDERERS).

def draw_trend(doc: Trend, con: Console, opts: Any) -> None:
    print_trend(doc, con)


def trend_md(doc: Trend, opts: Any) -> str:
    return trend_markdown(doc)


def draw_compare(doc: Comparison, con: Console, opts: Any) -> None:
    print_compare(doc, con)


def compare_md(doc: Comparison, opts: Any) -> str:
    return compare_markdown(doc)


def draw_diff(doc: Diff, con: Console, opts: Any) -> None:
    print_diff(doc, con, opts.show)


def diff_md(doc: Diff, opts: Any) -> str:
    return diff_markdown(doc, opts.show)
