"""Terminal (Rich) and Markdown renderings of trends, comparisons and diffs.

Pure functions of the objects in :mod:`ckpt_audit.runs.trend` and :mod:`ckpt_audit.runs.compare`;
the
``*_text`` variants render to a string at a fixed width (tests pin the width).
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Sequence

from rich.console import Console
from rich.table import Table
from rich.text import Text

from ckpt_audit.report.table import VERDICT_STYLE
from ckpt_audit.runs.audit import CheckpointResult
from ckpt_audit.runs.compare import Divergence, GainDiff, audited_by_step, matching_steps
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
    shown = trend.tracked[:MAX_GAIN_COLUMNS]
    t = Table(title="Checkpoints", title_justify="left")
    t.add_column("step", justify="right")
    t.add_column("checkpoint")
    t.add_column("verdict")
    for name in shown:
        t.add_column(name.removesuffix(".weight"), justify="right")
    if len(trend.tracked) > len(shown):
        t.add_column("other gains out of band", justify="right")
    for res in trend.results:
        cells: list[str | Text] = [str(res.checkpoint.step), res.checkpoint.name,
                                   Text(res.verdict, style=VERDICT_STYLE.get(res.verdict, ""))]
        gains = res.gains()
        for name in shown:
            rec = gains.get(name)
            cells.append(f"{_r(rec.stats.ratio)} {rec.status.value}" if rec else "—")
        if len(trend.tracked) > len(shown):
            rest = [gains[n] for n in trend.tracked[len(shown):] if n in gains]
            cells.append(f"{sum(out_of_band(r) for r in rest)} of {len(rest)}" if rest else "—")
        t.add_row(*cells)
    con.print(t)
    for res in trend.results:
        if not res.checkpoint.complete:
            con.print(f"[magenta]incomplete[/] {res.checkpoint.name}: "
                      + "; ".join(res.checkpoint.problems))
        elif res.error:
            con.print(f"[red]error[/] {res.checkpoint.name}: {res.error}")
    g = Table(title="Gains over the run (▁ lowest … █ highest ratio)", title_justify="left")
    for col in ("trend", "gain", "role", "first", "last", "min–max", "first out of band"):
        g.add_column(col, justify="right" if col in ("first", "last") else "left")
    for name in trend.tracked:
        values = [r for _, r in series(trend.results, name)]
        finite = [v for v in values if v is not None and math.isfinite(v)]
        role = next((res.gains()[name].role.value for res in trend.results
                     if name in res.gains()), "")
        first = trend.first_out_of_band.get(name)
        g.add_row(sparkline(values), name, role, _r(finite[0] if finite else None),
                  _r(finite[-1] if finite else None),
                  f"{min(finite):.3f}–{max(finite):.3f}" if finite else "—",
                  Text(f"step {first}", style="bold red") if first is not None else "never")
    con.print(g)
    for j in trend.jumps:
        con.print(f"[yellow]jump[/] {j.name}: {j.ratio_from:.3f} → {j.ratio_to:.3f} "
                  f"({j.change:+.1%}) between steps {j.step_from} and {j.step_to}")


def trend_markdown(trend: Trend) -> str:
    """A Markdown summary (GitHub step summary) of a trend."""
    lines = [f"## ckpt-audit trend: `{trend.run}` — **{trend.verdict.upper()}**", ""]
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
    for j in trend.jumps:
        lines.append(f"- jump `{j.name}`: {j.ratio_from:.3f} → {j.ratio_to:.3f} "
                     f"({j.change:+.1%}) between steps {j.step_from} and {j.step_to}")
    for res in trend.results:
        if not res.checkpoint.complete:
            lines.append(f"- incomplete `{res.checkpoint.name}`: "
                         + "; ".join(res.checkpoint.problems))
    return "\n".join(lines) + "\n"


def print_compare(runs: Sequence[tuple[str, Sequence[CheckpointResult]]],
                  divergences: Sequence[Divergence | None], tolerance: float,
                  con: Console) -> None:
    """Final-norm ratio of every run at each matching step, then each run's first divergence."""
    steps = matching_steps([r for _, r in runs])
    by = [audited_by_step(r) for _, r in runs]
    t = Table(title=f"Final-norm ratio at matching steps (reference: {runs[0][0]})",
              title_justify="left")
    t.add_column("step", justify="right")
    for label, _ in runs:
        t.add_column(label, justify="right")
    for s in steps:
        t.add_row(str(s), *[f"{_r(b[s].final_ratio)} {b[s].verdict}" for b in by])
    con.print(t)
    if not steps:
        con.print("[yellow]no matching steps[/]: the runs have no audited step in common")
    for (label, _), d in zip(runs[1:], divergences, strict=True):
        if d is None:
            con.print(f"{label}: every common gain within ±{tolerance} of {runs[0][0]} "
                      "at every matching step")
        else:
            layer = f"layer {d.layer}" if d.layer is not None else d.role
            con.print(f"{label}: first diverges at step {d.step}, {d.name} ({layer}): "
                      f"{d.ratio_reference:.3f} vs {d.ratio_other:.3f} "
                      f"(Δ {d.difference:+.3f}, tolerance {tolerance})")


def print_diff(a: str, b: str, rows: Sequence[GainDiff], con: Console, show: int) -> None:
    """Per gain, both ratios and the change, largest |change| first."""
    t = Table(title=f"Gains: A = {a}, B = {b} (sorted by |change|)", title_justify="left")
    for col in ("tensor", "role", "layer", "ratio A", "ratio B", "change", "relative",
                "status A→B"):
        t.add_column(col, justify="right" if col not in ("tensor", "role", "status A→B")
                     else "left")
    for d in rows[:show]:
        rel = f"{d.relative:+.1%}" if d.relative is not None and math.isfinite(d.relative) \
            else "—"
        change = f"{d.change:+.4f}" if d.change is not None else "—"
        t.add_row(d.name, d.role, "" if d.layer is None else str(d.layer), _r(d.ratio_a),
                  _r(d.ratio_b), change, rel, f"{d.status_a or '—'} → {d.status_b or '—'}")
    con.print(t)
    if len(rows) > show:
        con.print(f"… and {len(rows) - show} more (--show N)")
