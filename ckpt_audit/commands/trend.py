"""``ckpt-audit trend RUN``: every checkpoint of a run, the tracked gains' ratios over steps."""

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
    BaselineOpt,
    ConfigOpt,
    ConventionOpt,
    DModelOpt,
    FailOn,
    FailOnOpt,
    FormatHintOpt,
    GithubOpt,
    Incomplete,
    IncompleteOpt,
    OutputFormat,
    OutputOpt,
    PlotOpt,
    PlotSizeOpt,
    ReadOptions,
    SettleOpt,
    WidthOpt,
)
from ckpt_audit.errors import CkptAuditError
from ckpt_audit.runs import trend as trend_rules

#: The roles followed when --roles is not given (the one default, in ckpt_audit.runs.trend).
DEFAULT_ROLES = ",".join(trend_rules.DEFAULT_ROLES)


def run_trend(run: str, *, fmt: OutputFormat = OutputFormat.TABLE, output: str | None = None,
              config: str | None = None, fail_on: FailOn = FailOn.FAIL,
              incomplete: Incomplete = Incomplete.WARN, jump: float | None = None,
              roles: str = DEFAULT_ROLES, gains: str | None = None, plot: str | None = None,
              plot_size: str = "1000x600", baseline: str | None = None, settle: float = 0.0,
              github: bool | None = None, read: ReadOptions = ReadOptions(),
              width: int | None = None) -> int:
    """Discover, audit, build the trend, render it; return the exit code."""
    from ckpt_audit.core.policy import load_policy
    from ckpt_audit.report import RenderOptions
    from ckpt_audit.runs.audit import audit_checkpoints
    from ckpt_audit.runs.discovery import discover_run
    from ckpt_audit.runs.trend import build_trend, series

    def check_jump() -> None:
        finite("--jump", jump)
        if jump is not None and jump <= 0:
            raise CkptAuditError("--jump must be a positive fraction (0.3 = 30 %)")

    role_list, _, size, _ = _runs.check_all(
        lambda: _runs.parse_roles(roles), lambda: _runs.parse_regex("--gains", gains),
        lambda: _runs.parse_size(plot_size) if plot else None, check_jump)
    refuse_inside_any(output, [run])
    refuse_inside_any(plot, [run])
    policy = load_policy(config)
    discovered = discover_run(run, settle=settle)
    results = audit_checkpoints(discovered.checkpoints, **read.audit_kwargs(policy))
    results = _runs.apply_baseline(results, baseline, policy)
    trend = build_trend(run, results, roles=role_list, pattern=gains, jump=jump,
                        signals=policy.signals)
    if gains or roles != DEFAULT_ROLES:  # a filter the user asked for must match something
        _runs.require_match(f"--gains {gains!r}" if gains else f"--roles {roles}",
                            trend.tracked, results, by_role=gains is None)
    opts = RenderOptions(width, fail_on.severity, bands=tuple(_runs.band_list(policy)))
    write_document(trend, fmt.value, output, opts)
    if plot and size:
        from ckpt_audit.report.plot import plot_lines

        lines = {name: series(trend.results, name) for name in trend.tracked}
        plot_lines(plot, lines, _runs.band_list(policy), title=f"ckpt-audit trend: {run}",
                   width=size[0], height=size[1])
        say(f"ckpt-audit: plot written to {plot}")
    github_outputs(trend, github, opts, [run])
    return _runs.exit_code(trend.results, fail_on.severity, incomplete.value, trend.findings)


def register(app: typer.Typer) -> None:
    @app.command("trend")
    def trend(
        run: Annotated[str, typer.Argument(help="Run folder (checkpoint-N, iter_N, global_stepN, "
                                                "step-N children).")],
        fmt: Annotated[OutputFormat, typer.Option("--format", "-f",
                                                  help="Report format.")] = OutputFormat.TABLE,
        output: OutputOpt = None,
        config: ConfigOpt = None,
        fail_on: FailOnOpt = FailOn.FAIL,
        incomplete: IncompleteOpt = Incomplete.WARN,
        jump: Annotated[float | None, typer.Option(
            "--jump", help="Alert when a ratio changes by more than this fraction between "
                           "consecutive checkpoints (default: the policy's [signals] jump, "
                           "0.30).")] = None,
        roles: Annotated[str, typer.Option(
            "--roles", help="Roles to follow (comma list; 'all' for every gain).")] = DEFAULT_ROLES,
        gains: Annotated[str | None, typer.Option(
            "--gains", help="Follow the gains whose name matches REGEX (instead of "
                            "--roles).")] = None,
        plot: PlotOpt = None,
        plot_size: PlotSizeOpt = "1000x600",
        baseline: BaselineOpt = None,
        settle: SettleOpt = 0.0,
        github: GithubOpt = None,
        format_hint: FormatHintOpt = None,
        d_model: DModelOpt = None,
        convention: ConventionOpt = None,
        width: WidthOpt = None,
    ) -> None:
        """Final and MTP norms over a run: ratios, first step out of band, jumps, plot."""
        code = run_trend(run, fmt=fmt, output=output, config=config, fail_on=fail_on,
                         incomplete=incomplete, jump=jump, roles=roles, gains=gains, plot=plot,
                         plot_size=plot_size, baseline=baseline, settle=settle, github=github,
                         read=ReadOptions.of(format_hint, d_model, convention), width=width)
        raise typer.Exit(code)
