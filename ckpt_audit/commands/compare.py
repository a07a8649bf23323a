"""``ckpt-audit compare RUN_A RUN_B [...]``: runs side by side at matching steps."""

from __future__ import annotations

import json

import typer

from ckpt_audit.commands import _runs
from ckpt_audit.commands._common import finite
from ckpt_audit.errors import CkptAuditError


def run_compare(runs: list[str], *, fmt: str = "table", output: str | None = None,
                config: str | None = None, tolerance: float = 0.05, plot: str | None = None,
                plot_size: str = "1000x600", gain: str | None = None, settle: float = 0.0,
                format_hint: str | None = None, d_model: int | None = None,
                convention: str | None = None, width: int | None = None) -> int:
    """Audit every run, compare each with the first; exit 1 when any run diverges."""
    from ckpt_audit.commands._common import console
    from ckpt_audit.commands.trend import parse_size
    from ckpt_audit.core.policy import load_policy
    from ckpt_audit.report.plot import plot_lines
    from ckpt_audit.report.runs import print_compare, to_text
    from ckpt_audit.runs.audit import audit_checkpoints
    from ckpt_audit.runs.compare import compare_to_dict, first_divergence
    from ckpt_audit.runs.discovery import discover_run
    from ckpt_audit.runs.trend import series

    if len(runs) < 2:
        raise CkptAuditError("compare needs at least two runs")
    _runs.check_choice("--format", fmt, ("table", "json"))
    finite("--tolerance", tolerance)
    if tolerance < 0:
        raise CkptAuditError("--tolerance must be >= 0")
    size = parse_size(plot_size) if plot else None
    _runs.refuse_inside_any(output, runs)
    _runs.refuse_inside_any(plot, runs)
    policy = load_policy(config)
    kwargs = _runs.audit_kwargs(policy, format_hint, d_model, convention)
    audited = [(r, audit_checkpoints(discover_run(r, settle=settle).checkpoints, **kwargs))
               for r in runs]
    divergences = [first_divergence(audited[0], other, tolerance) for other in audited[1:]]
    if fmt == "json":
        _runs.write(json.dumps(compare_to_dict(audited, divergences, tolerance), indent=2) + "\n",
                    output)
    elif output:
        _runs.write(to_text(lambda c: print_compare(audited, divergences, tolerance, c), width),
                    output)
    else:
        print_compare(audited, divergences, tolerance, console(width))
    if plot and size:
        lines = {}
        for label, results in audited:
            name = gain or next((r.final.name for r in results if r.final), None)
            if name:
                lines[label] = series(results, name)
        role = "final"
        plot_lines(plot, lines, _runs.band_list(policy, role),
                     title=f"ckpt-audit compare: {gain or 'final norm'}", width=size[0],
                     height=size[1])
    return 1 if any(d is not None for d in divergences) else 0


def register(app: typer.Typer) -> None:
    @app.command("compare")
    def compare(
        runs: list[str] = typer.Argument(..., help="Two or more run folders; the first is the "
                                                   "reference."),
        fmt: str = typer.Option("table", "--format", "-f", help="table | json"),
        output: str | None = typer.Option(None, "--output", "-o", help="Write to FILE."),
        config: str | None = typer.Option(None, "--config", "-c", help="Policy TOML."),
        tolerance: float = typer.Option(0.05, "--tolerance",
                                        help="A gain diverges when |ratio_B - ratio_A| exceeds "
                                             "this."),
        plot: str | None = typer.Option(None, "--plot", help="PNG overlay of the runs."),
        plot_size: str = typer.Option("1000x600", "--plot-size", help="PNG size WxH."),
        gain: str | None = typer.Option(None, "--gain",
                                           help="Gain to overlay in --plot (default: final)."),
        settle: float = typer.Option(0.0, "--settle", min=0.0),
        format_hint: str | None = typer.Option(None, "--format-hint"),
        d_model: int | None = typer.Option(None, "--d-model", min=1),
        convention: str | None = typer.Option(None, "--convention"),
        width: int | None = typer.Option(None, "--width", min=40),
    ) -> None:
        """Compare runs at matching steps; report the first gain (by layer) that diverges."""
        raise typer.Exit(run_compare(runs, fmt=fmt, output=output, config=config,
                                     tolerance=tolerance, plot=plot, plot_size=plot_size,
                                     gain=gain, settle=settle, format_hint=format_hint,
                                     d_model=d_model, convention=convention, width=width))
