"""``ckpt-audit report RUN [RUN …] -o report.html``: the HTML run report (one file, no network)."""

from __future__ import annotations

from typing import Annotated

import typer

from ckpt_audit.commands import _runs
from ckpt_audit.commands._common import emit, refuse_inside_any, say
from ckpt_audit.commands.options import (
    BaselineOpt,
    ConfigOpt,
    ConventionOpt,
    DModelOpt,
    FailOn,
    FailOnOpt,
    FormatHintOpt,
    Incomplete,
    IncompleteOpt,
    ReadOptions,
    SettleOpt,
)


def run_report(runs: list[str], *, output: str | None = None, config: str | None = None,
               tolerance: float = 0.05, baseline: str | None = None,
               fail_on: FailOn = FailOn.FAIL, incomplete: Incomplete = Incomplete.WARN,
               settle: float = 0.0, read: ReadOptions = ReadOptions()) -> int:
    """Audit every run, render the HTML report; exit as ``trend`` (and ``compare`` for 2+)."""
    from ckpt_audit.commands._common import verdict_line
    from ckpt_audit.core.policy import load_policy
    from ckpt_audit.report.html import runs_html
    from ckpt_audit.runs.audit import audit_checkpoints
    from ckpt_audit.runs.compare import Comparison, first_divergence
    from ckpt_audit.runs.discovery import discover_run
    from ckpt_audit.runs.trend import build_trend

    refuse_inside_any(output, runs)
    policy = load_policy(config)
    kwargs = read.audit_kwargs(policy)
    audited = tuple((r, _runs.apply_baseline(
        audit_checkpoints(discover_run(r, settle=settle).checkpoints, **kwargs), baseline,
        policy)) for r in runs)
    trends = [build_trend(label, results) for label, results in audited]
    cmp = (Comparison(audited, tuple(first_divergence(audited[0], o, tolerance)
                                     for o in audited[1:]), tolerance)
           if len(audited) > 1 else None)
    emit(runs_html(trends, cmp, _runs.band_list(policy)), output)
    code = max([_runs.exit_code(t.results, fail_on.severity, incomplete.value, t.findings)
                for t in trends]
               + [1 if cmp is not None and cmp.verdict == "fail" else 0])
    if output:
        for t in trends:
            say(verdict_line(t).replace("ckpt-audit:", f"ckpt-audit: {t.run}:"))
        if cmp is not None:
            say(verdict_line(cmp).replace("ckpt-audit:", "ckpt-audit: compare:"))
        say(f"ckpt-audit: HTML report written to {output}")
    return code


def register(app: typer.Typer) -> None:
    @app.command("report")
    def report(
        runs: Annotated[list[str], typer.Argument(
            help="One or more run folders; with several, the first is the reference.")],
        output: Annotated[str | None, typer.Option(
            "--output", "-o", help="Write the HTML report to FILE (default: stdout).")] = None,
        config: ConfigOpt = None,
        tolerance: Annotated[float, typer.Option(
            "--tolerance", min=0.0,
            help="Runs diverge when a gain's |ratio_B - ratio_A| exceeds this.")] = 0.05,
        baseline: BaselineOpt = None,
        fail_on: FailOnOpt = FailOn.FAIL,
        incomplete: IncompleteOpt = Incomplete.WARN,
        settle: SettleOpt = 0.0,
        format_hint: FormatHintOpt = None,
        d_model: DModelOpt = None,
        convention: ConventionOpt = None,
    ) -> None:
        """One self-contained HTML page for one or more runs: verdicts, ratio charts with the
        bands, a heatmap of every gain, runs side by side, findings."""
        raise typer.Exit(run_report(runs, output=output, config=config, tolerance=tolerance,
                                    baseline=baseline, fail_on=fail_on, incomplete=incomplete,
                                    settle=settle,
                                    read=ReadOptions.of(format_hint, d_model, convention)))
