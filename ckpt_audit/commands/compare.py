"""``ckpt-audit compare RUN_A RUN_B [...]``: runs side by side at matching steps."""

from __future__ import annotations

from typing import Annotated

import typer

from ckpt_audit.commands import _runs
from ckpt_audit.commands._common import (
    finite,
    github_outputs,
    refuse_inside_any,
    say,
    write_document,
)
from ckpt_audit.commands.options import (
    ConfigOpt,
    ConventionOpt,
    DModelOpt,
    FormatHintOpt,
    GithubOpt,
    OutputFormat,
    OutputOpt,
    PlotOpt,
    PlotSizeOpt,
    ReadOptions,
    SettleOpt,
    WidthOpt,
)
from ckpt_audit.errors import CkptAuditError


def run_compare(runs: list[str], *, fmt: OutputFormat = OutputFormat.TABLE,
                output: str | None = None, config: str | None = None, tolerance: float = 0.05,
                plot: str | None = None, plot_size: str = "1000x600", gain: str | None = None,
                settle: float = 0.0, read: ReadOptions = ReadOptions(),
                width: int | None = None, github: bool | None = None) -> int:
    """Audit every run, compare each with the first; exit 1 when any run diverges."""
    from ckpt_audit.core.policy import load_policy
    from ckpt_audit.report import RenderOptions
    from ckpt_audit.runs.audit import audit_checkpoints
    from ckpt_audit.runs.compare import Comparison, first_divergence
    from ckpt_audit.runs.discovery import discover_run
    from ckpt_audit.runs.trend import series

    if len(runs) < 2:
        raise CkptAuditError("compare needs at least two runs")
    finite("--tolerance", tolerance)
    if tolerance < 0:
        raise CkptAuditError("--tolerance must be >= 0")
    size = _runs.parse_size(plot_size) if plot else None
    refuse_inside_any(output, runs)
    refuse_inside_any(plot, runs)
    policy = load_policy(config)
    kwargs = read.audit_kwargs(policy)
    audited = tuple((r, audit_checkpoints(discover_run(r, settle=settle).checkpoints, **kwargs))
                    for r in runs)
    cmp = Comparison(audited, tuple(first_divergence(audited[0], other, tolerance)
                                    for other in audited[1:]), tolerance)
    lines = {}
    if (plot and size) or gain:  # checked before anything is written
        for label, results in audited:
            name = gain or next((r.final.name for r in results if r.final), None)
            if name and any(name in r.gains() for r in results):
                lines[label] = series(results, name)
        _runs.require_match(f"--gain {gain!r}" if gain else "the final norm", list(lines),
                            [r for _, res in audited for r in res], by_role=False)
    opts = RenderOptions(width, bands=tuple(_runs.band_list(policy)))
    write_document(cmp, fmt.value, output, opts)
    github_outputs(cmp, github, opts, runs)
    if plot and size:
        from ckpt_audit.report.plot import plot_lines

        plot_lines(plot, lines, _runs.band_list(policy, "final"),
                     title=f"ckpt-audit compare: {gain or 'final norm'}", width=size[0],
                     height=size[1])
        say(f"ckpt-audit: plot written to {plot}")
    return 1 if cmp.verdict == "fail" else 0


def register(app: typer.Typer) -> None:
    @app.command("compare")
    def compare(
        runs: Annotated[list[str], typer.Argument(
            help="Two or more run folders; the first is the reference.")],
        fmt: Annotated[OutputFormat, typer.Option("--format", "-f",
                                                  help="Report format.")] = OutputFormat.TABLE,
        output: OutputOpt = None,
        config: ConfigOpt = None,
        tolerance: Annotated[float, typer.Option(
            "--tolerance", min=0.0,
            help="A gain diverges when |ratio_B - ratio_A| exceeds this.")] = 0.05,
        plot: PlotOpt = None,
        plot_size: PlotSizeOpt = "1000x600",
        gain: Annotated[str | None, typer.Option(
            "--gain", help="Gain to overlay in --plot (default: the final norm).")] = None,
        settle: SettleOpt = 0.0,
        format_hint: FormatHintOpt = None,
        d_model: DModelOpt = None,
        convention: ConventionOpt = None,
        width: WidthOpt = None,
        github: GithubOpt = None,
    ) -> None:
        """Compare runs at matching steps; report the first gain (by layer) that diverges."""
        raise typer.Exit(run_compare(runs, fmt=fmt, output=output, config=config,
                                     tolerance=tolerance, plot=plot, plot_size=plot_size,
                                     gain=gain, settle=settle,
                                     read=ReadOptions.of(format_hint, d_model, convention),
                                     width=width, github=github))
