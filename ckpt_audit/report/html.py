"""The HTML report: one self-contained file (inline CSS and SVG, no script, no network) that
shows a run the way people would rather look than read.

Sections: the verdict of every checkpoint; the final and MTP ratios over steps with the policy's
bands shaded and each gain's first out-of-band step marked; a heatmap of every gain's ratio
(gains × checkpoints, grouped by role and layer); runs side by side with the first layer where
they part; every finding; the MTP acceptance figures when a probe was run. Chart elements carry
their numbers as ``data-*`` attributes and ``<title>`` tooltips (tests read them in a browser).
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from typing import Any

from ckpt_audit import __version__
from ckpt_audit.records import AuditReport, Finding, NormRecord, Role
from ckpt_audit.report.findings import finding_line, worth_showing
from ckpt_audit.runs.audit import CheckpointResult
from ckpt_audit.runs.compare import Comparison, Diff
from ckpt_audit.runs.trend import Trend, build_trend, series

Band = tuple[str, "float | None", "float | None"]
BAND_FILL = {"collapse": "#f4c7c3", "low": "#fde2c4", "shrink": "#e3f1d8", "nominal": "#cfe8c2",
             "growth": "#e3f1d8", "explosion": "#f4c7c3"}
LINE_COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2",
                "#17becf")
ROLE_ORDER = {r: i for i, r in enumerate((Role.EMBEDDING, Role.LAYER, Role.QK, Role.LATENT,
                                          Role.FINAL, Role.MTP, Role.OTHER))}

CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#222;max-width:1200px}
h1{font-size:20px}h2{font-size:17px;margin-top:28px;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:8px 0}td,th{border:1px solid #ddd;padding:3px 8px}
th{background:#f6f6f6;text-align:left}td.num{text-align:right;font-variant-numeric:tabular-nums}
.verdict{font-weight:bold;padding:2px 8px;border-radius:3px;color:#fff;display:inline-block}
.v-pass{background:#2e7d32}.v-warn{background:#b26a00}.v-fail,.v-error{background:#c62828}
.v-incomplete{background:#6a1b9a}.sev-fail{color:#c62828}.sev-warn{color:#b26a00}
.sev-info{color:#1565c0}svg{background:#fff;border:1px solid #eee;margin:6px 0}
svg text{font:11px system-ui,sans-serif}code{font-size:12px}
.muted{color:#777}
"""


def _e(x: object) -> str:
    return html.escape(str(x), quote=True)


def _n(x: float | None, digits: int = 4) -> str:
    return "—" if x is None or not math.isfinite(x) else f"{x:.{digits}f}"


def _attr(x: float | None) -> str:
    return "" if x is None or not math.isfinite(x) else repr(round(x, 6))


def page(title: str, sections: Sequence[str]) -> str:
    """The whole document."""
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; "
            "style-src 'unsafe-inline'; img-src data:\">"
            f"<title>{_e(title)}</title><style>{CSS}</style></head><body>"
            f"<h1>{_e(title)}</h1><p class=\"muted\">ckpt-audit {_e(__version__)}; "
            "definitions: docs/METRICS.md, docs/RUNS.md</p>"
            + "".join(sections) + "</body></html>\n")


# ------------------------------------------------------------------------------------ charts


def line_chart(lines: Mapping[str, Sequence[tuple[int, float | None]]], bands: Sequence[Band],
               marks: Mapping[str, int], *, title: str, chart_id: str,
               width: int = 860, height: int = 320) -> str:
    """Ratio against step: the bands shaded, one polyline per series, out-of-band marks."""
    left, right, top_pad, bottom = 56, 110, 24, 36
    pts = [(s, r) for ps in lines.values() for s, r in ps if r is not None and math.isfinite(r)]
    steps = sorted({s for ps in lines.values() for s, _ in ps}) or [0]
    x0, x1 = steps[0], steps[-1] if steps[-1] > steps[0] else steps[0] + 1
    edges = [x for _, lo, hi in bands for x in (lo, hi) if x is not None and x < 4]
    top = max([r for _, r in pts] + edges + [1.0]) * 1.1
    pw, ph = width - left - right, height - top_pad - bottom

    def X(step: float) -> float:
        return left + (step - x0) / (x1 - x0) * pw

    def Y(ratio: float) -> float:
        return top_pad + ph - min(max(ratio, 0.0), top) / top * ph

    out = [f'<svg id="{_e(chart_id)}" class="chart line-chart" width="{width}" '
           f'height="{height}" viewBox="0 0 {width} {height}" role="img" '
           f'aria-label="{_e(title)}"><title>{_e(title)}</title>']
    for status, lo, hi in bands:
        y_hi, y_lo = Y(top if hi is None else min(hi, top)), Y(0.0 if lo is None else lo)
        if y_lo - y_hi <= 0:
            continue
        out.append(f'<rect class="band band-{_e(status)}" data-status="{_e(status)}" '
                   f'data-lo="{_attr(lo)}" data-hi="{_attr(hi)}" x="{left}" y="{y_hi:.1f}" '
                   f'width="{pw}" height="{y_lo - y_hi:.1f}" '
                   f'fill="{BAND_FILL.get(status, "#eee")}"><title>{_e(status)}: '
                   f'{_e(_n(lo, 2))} – {_e(_n(hi, 2))}</title></rect>')
        out.append(f'<text x="{left + pw + 4}" y="{(y_hi + y_lo) / 2 + 4:.1f}" '
                   f'fill="#555">{_e(status)}</text>')
    for k in range(0, int(top / 0.5) + 1):
        y = Y(k * 0.5)
        out.append(f'<line x1="{left - 4}" x2="{left}" y1="{y:.1f}" y2="{y:.1f}" '
                   f'stroke="#999"/><text x="{left - 8}" y="{y + 4:.1f}" '
                   f'text-anchor="end">{k * 0.5:g}</text>')
    ticks = steps if len(steps) <= 12 else steps[:: math.ceil(len(steps) / 10)]
    for s in ticks:
        out.append(f'<text x="{X(s):.1f}" y="{height - bottom + 16}" '
                   f'text-anchor="middle">{s}</text>')
    out.append(f'<text x="{left + pw / 2}" y="{height - 4}" text-anchor="middle">step</text>'
               f'<line x1="{left}" x2="{left + pw}" y1="{Y(1.0):.1f}" y2="{Y(1.0):.1f}" '
               'stroke="#333" stroke-dasharray="4 3"/>')
    for i, (label, series_pts) in enumerate(lines.items()):
        colour = LINE_COLOURS[i % len(LINE_COLOURS)]
        finite = [(s, r) for s, r in series_pts if r is not None and math.isfinite(r)]
        coords = " ".join(f"{X(s):.1f},{Y(r):.1f}" for s, r in finite)
        out.append(f'<g class="series" data-series="{_e(label)}"><polyline points="{coords}" '
                   f'fill="none" stroke="{colour}" stroke-width="2"/>')
        for s, r in finite:
            out.append(f'<circle class="pt" data-series="{_e(label)}" data-step="{s}" '
                       f'data-ratio="{_attr(r)}" cx="{X(s):.1f}" cy="{Y(r):.1f}" r="3.5" '
                       f'fill="{colour}"><title>{_e(label)} step {s}: ratio {r:.4f}</title>'
                       '</circle>')
        out.append("</g>")
        out.append(f'<text x="{left + 8}" y="{top_pad + 14 + 14 * i}" fill="{colour}">'
                   f'{_e(label)}</text>')
        if label in marks:
            s = marks[label]
            out.append(f'<g class="oob-mark" data-series="{_e(label)}" data-step="{s}">'
                       f'<line x1="{X(s):.1f}" x2="{X(s):.1f}" y1="{top_pad}" '
                       f'y2="{top_pad + ph}" stroke="{colour}" stroke-dasharray="2 2"/>'
                       f'<text x="{X(s) + 3:.1f}" y="{top_pad + ph - 4 - 12 * i}" '
                       f'fill="{colour}">first out of band: step {s}</text></g>')
    out.append("</svg>")
    return "".join(out)


def _colour(ratio: float | None) -> str:
    """Diverging scale on log2(ratio): red below 1, blue above, white at 1; grey: absent."""
    if ratio is None:
        return "#eeeeee"
    if not math.isfinite(ratio) or ratio <= 0:
        return "#000000"
    t = max(-1.0, min(1.0, math.log2(ratio) / 1.5))
    a = int(255 - 200 * abs(t))
    return f"#ff{a:02x}{a:02x}" if t < 0 else f"#{a:02x}{a:02x}ff"


def _gain_order(rec: NormRecord) -> tuple[int, int, str]:
    return (ROLE_ORDER.get(rec.role, 9), rec.layer if rec.layer is not None else -1, rec.name)


def heatmap(results: Sequence[CheckpointResult], *, chart_id: str, title: str) -> str:
    """Every gain's ratio, gains (rows, grouped by role then layer) × checkpoints (columns)."""
    recs: dict[str, NormRecord] = {}
    for res in results:
        for name, rec in res.gains().items():
            recs.setdefault(name, rec)
    names = sorted(recs, key=lambda n: _gain_order(recs[n]))
    cols = [r for r in results if r.report is not None]
    if not names or not cols:
        return f'<p class="muted">{_e(title)}: no audited gains.</p>'
    label_w, cell_w, cell_h, head = 330, max(16, min(60, 560 // len(cols))), 13, 34
    groups = [(recs[n].role.value, n) for n in names]
    n_heads = len({g for g, _ in groups})
    height = head + (len(names) + n_heads) * cell_h + 8
    width = label_w + cell_w * len(cols) + 10
    out = [f'<svg id="{_e(chart_id)}" class="chart heatmap" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" role="img" aria-label="{_e(title)}">'
           f'<title>{_e(title)}</title>']
    for j, res in enumerate(cols):
        x = label_w + j * cell_w + cell_w / 2
        out.append(f'<text x="{x:.1f}" y="{head - 8}" text-anchor="middle">'
                   f'{res.checkpoint.step}</text>')
    y, current = head, None
    for role, name in groups:
        if role != current:
            current = role
            out.append(f'<text class="group" x="2" y="{y + 10}" font-weight="bold">{_e(role)}'
                       "</text>")
            y += cell_h
        rec = recs[name]
        short = name if len(name) <= 52 else "…" + name[-51:]
        out.append(f'<text x="{label_w - 6}" y="{y + 10}" text-anchor="end">{_e(short)}</text>')
        for j, res in enumerate(cols):
            r = res.gains().get(name)
            ratio = r.stats.ratio if r else None
            status = r.status.value if r else "absent"
            out.append(f'<rect class="cell" data-gain="{_e(name)}" data-role="{_e(rec.role.value)}"'
                       f' data-layer="{"" if rec.layer is None else rec.layer}" '
                       f'data-step="{res.checkpoint.step}" data-ratio="{_attr(ratio)}" '
                       f'data-status="{_e(status)}" x="{label_w + j * cell_w}" y="{y}" '
                       f'width="{cell_w - 1}" height="{cell_h - 1}" fill="{_colour(ratio)}" '
                       'stroke="#ddd" stroke-width="0.5">'
                       f'<title>{_e(name)} step {res.checkpoint.step}: ratio {_n(ratio)} '
                       f'({_e(status)})</title></rect>')
        y += cell_h
    out.append("</svg>")
    return "".join(out) + ('<p class="muted">Colour: ratio ‖γ‖₂/√n on a log scale, red below 1, '
                           'blue above 1, white at 1; black non-finite; grey absent.</p>')


# ---------------------------------------------------------------------------------- sections


def verdict_table(trend: Trend) -> str:
    rows = "".join(
        f'<tr class="checkpoint" data-step="{r.checkpoint.step}" data-verdict="{_e(r.verdict)}">'
        f'<td class="num">{r.checkpoint.step}</td><td>{_e(r.checkpoint.name)}</td>'
        f'<td><span class="verdict v-{_e(r.verdict)}">{_e(r.verdict)}</span></td>'
        f'<td class="num">{_n(r.final_ratio)}</td>'
        f'<td>{_e(r.error or "; ".join(r.checkpoint.problems))}</td></tr>'
        for r in trend.results)
    return (f'<table class="verdicts" data-run="{_e(trend.run)}"><tr><th>step</th>'
            "<th>checkpoint</th><th>verdict</th><th>final ratio</th><th>why not audited</th>"
            f"</tr>{rows}</table>")


def findings_list(items: Sequence[tuple[str, Finding]]) -> str:
    if not items:
        return '<p class="muted">No findings above ok.</p>'
    lis = "".join(f'<li class="finding sev-{_e(f.severity.value)}" data-code="{_e(f.code)}">'
                  f'<b>{_e(where)}</b> {_e(finding_line(f))}</li>' for where, f in items)
    return f'<ul class="findings">{lis}</ul>'


def trend_section(trend: Trend, bands: Sequence[Band], idx: int) -> str:
    lines = {name: series(trend.results, name) for name in trend.tracked}
    found = [("run:", f) for f in worth_showing(trend.findings)] + [
        (f"{r.checkpoint.name}:", f) for r in trend.results for f in worth_showing(r.findings)]
    return (f'<section class="run" data-run="{_e(trend.run)}"><h2>Run <code>{_e(trend.run)}'
            f'</code> <span class="verdict v-{_e(trend.verdict)}">{_e(trend.verdict)}</span>'
            "</h2><h3>Verdict per checkpoint</h3>" + verdict_table(trend)
            + "<h3>Final and MTP ratios over steps</h3>"
            + line_chart(lines, bands, trend.first_out_of_band, chart_id=f"ratios-{idx}",
                         title=f"ratio ‖γ‖₂/√n against step: {trend.run}")
            + "<h3>Every gain (heatmap)</h3>"
            + heatmap(trend.results, chart_id=f"heatmap-{idx}", title=f"gains × checkpoints: "
                      f"{trend.run}")
            + "<h3>Findings</h3>" + findings_list(found) + "</section>")


def comparison_section(cmp: Comparison, bands: Sequence[Band]) -> str:
    lines = {}
    for label, results in cmp.runs:
        name = next((r.final.name for r in results if r.final), None)
        if name:
            lines[label] = series(results, name)
    rows = "".join(
        f'<tr class="divergence" data-run="{_e(label)}" data-step="{"" if d is None else d.step}"'
        f' data-gain="{"" if d is None else _e(d.name)}">'
        f"<td>{_e(label)}</td>" + ("<td colspan=5>within ±"
                                   f"{cmp.tolerance} at every matching step</td>" if d is None
                                   else f'<td class="num">{d.step}</td><td>{_e(d.name)}</td>'
                                   f"<td>{'' if d.layer is None else d.layer}</td>"
                                   f'<td class="num">{_n(d.ratio_reference)}</td>'
                                   f'<td class="num">{_n(d.ratio_other)}</td>') + "</tr>"
        for (label, _), d in zip(cmp.runs[1:], cmp.divergences, strict=True))
    return ('<section class="compare"><h2>Runs side by side '
            f'<span class="verdict v-{_e(cmp.verdict)}">{_e(cmp.verdict)}</span></h2>'
            f"<p>Reference: <code>{_e(cmp.runs[0][0])}</code>; tolerance ±{cmp.tolerance} on "
            "the ratio.</p>"
            + line_chart(lines, bands, {}, chart_id="compare-final",
                         title="final-norm ratio of every run against step")
            + "<h3>First divergent layer</h3><table><tr><th>run</th><th>step</th><th>gain</th>"
            f"<th>layer</th><th>reference</th><th>this run</th></tr>{rows}</table>"
            + findings_list([("", f) for f in cmp.findings]) + "</section>")


def acceptance_section(acc: Mapping[str, Any]) -> str:
    depths = acc.get("depths", [])
    temps = list(depths[0].get("sampled_acceptance", {})) if depths else []
    head = "".join(f"<th>T={_e(t)}</th>" for t in temps)
    rows = "".join(
        f'<tr class="acceptance" data-depth="{_e(d.get("depth"))}" '
        f'data-greedy="{_attr(d.get("greedy_acceptance"))}"><td class="num">'
        f'{_e(d.get("depth"))}</td><td class="num">{_e(d.get("pairs"))}</td>'
        f'<td class="num">{_n(d.get("greedy_acceptance"))}</td>'
        + "".join(f'<td class="num">{_n(d.get("sampled_acceptance", {}).get(t))}</td>'
                  for t in temps) + "</tr>" for d in depths)
    return (f'<section class="acceptance"><h2>MTP acceptance ({_e(acc.get("layout"))}, '
            f'{_e(acc.get("positions"))} probe tokens)</h2><table><tr><th>depth</th>'
            f"<th>pairs</th><th>greedy</th>{head}</tr>{rows}</table><p>Expected tokens per "
            f'verifier step: {_n(acc.get("expected_tokens_per_step"), 3)} (docs/MTP.md).</p>'
            "</section>")


def audit_section(report: AuditReport, bands: Sequence[Band]) -> str:
    from ckpt_audit.runs.discovery import RunCheckpoint

    one = CheckpointResult(RunCheckpoint(report.checkpoint, report.checkpoint, 0, "single",
                                         True), report)
    final = report.final
    lines = {final.name: [(0, final.stats.ratio)]} if final else {}
    return (f'<section class="audit"><h2>Checkpoint <code>{_e(report.checkpoint)}</code> '
            f'<span class="verdict v-{_e(report.verdict)}">{_e(report.verdict)}</span></h2>'
            f"<p>format {_e(report.format)} · d_model {_e(report.d_model)} · convention "
            f"{_e(report.convention.value)} · policy {_e(report.policy_name)} · "
            f"{len(report.norms)} gains</p>"
            + (line_chart(lines, bands, {}, chart_id="ratios-0", title="final-norm ratio")
               if lines else "")
            + heatmap([one], chart_id="heatmap-0", title="every gain's ratio")
            + "<h3>Findings</h3>" + findings_list([("", f) for f in worth_showing(
                report.findings)]) + "</section>")


def runs_html(trends: Sequence[Trend], comparison: Comparison | None,
              bands: Sequence[Band]) -> str:
    """The run report of ``ckpt-audit report RUN [RUN …]``."""
    sections = [trend_section(t, bands, i) for i, t in enumerate(trends)]
    if comparison is not None:
        sections.insert(0, comparison_section(comparison, bands))
    return page("ckpt-audit run report: " + ", ".join(t.run for t in trends), sections)


# Entry points of the dispatch (ckpt_audit.report.RENDERERS): (document, options) -> text.

def audit_html(doc: Any, opts: Any) -> str:
    sections = [audit_section(doc.report, opts.bands)]
    if doc.acceptance is not None:
        sections.append(acceptance_section(doc.acceptance))
    return page(f"ckpt-audit: {doc.report.checkpoint}", sections)


def trend_html(doc: Trend, opts: Any) -> str:
    return runs_html([doc], None, opts.bands)


def compare_html(doc: Comparison, opts: Any) -> str:
    trends = [build_trend(label, results) for label, results in doc.runs]
    return runs_html(trends, doc, opts.bands)


def diff_html(doc: Diff, opts: Any) -> str:
    rows = "".join(f'<tr class="gain" data-gain="{_e(d.name)}" data-change="{_attr(d.change)}">'
                   f"<td>{_e(d.name)}</td><td>{_e(d.role)}</td>"
                   f'<td class="num">{_n(d.ratio_a)}</td><td class="num">{_n(d.ratio_b)}</td>'
                   f'<td class="num">{_n(d.change)}</td><td>{_e(d.status_a or "—")} → '
                   f'{_e(d.status_b or "—")}</td></tr>' for d in doc.rows)
    found = [("", f) for f in doc.findings] + [
        (f"{side}:", f) for side, rep in (("A", doc.a), ("B", doc.b))
        for f in worth_showing(rep.findings)]
    return page(f"ckpt-audit diff: {doc.a.checkpoint} → {doc.b.checkpoint}", [
        f'<section class="diff"><h2>Gains by change <span class="verdict v-{_e(doc.verdict)}">'
        f"{_e(doc.verdict)}</span></h2><table><tr><th>gain</th><th>role</th><th>ratio A</th>"
        f"<th>ratio B</th><th>change</th><th>status</th></tr>{rows}</table>"
        "<h3>Findings</h3>" + findings_list(found) + "</section>"])
