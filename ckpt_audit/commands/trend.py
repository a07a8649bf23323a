"""``ckpt-audit trend RUN``: every checkpoint of a run, the tracked gains' ratios over steps."""

from __future__ import annotations

import json

import typer

from ckpt_audit.commands import _runs
from ckpt_audit.commands._common import finite
from ckpt_audit.errors import CkptAuditError
from ckpt_audit.records import Role

FORMATS = ("table", "json", "markdown", "junit")


def parse_size(value: str) -> tuple[int, int]:
    """``WIDTHxHEIGHT`` in pixels."""
    try:
        w, h = (int(x) for x in value.lower().split("x"))
    except ValueError:
        raise CkptAuditError(f"--plot-size must look like 1000x600, not {value!r}") from None
    if not (50 <= w <= 10000 and 50 <= h <= 10000):
        raise CkptAuditError("--plot-size: each side must be 50–10000 pixels")
    return w, h


def run_trend(run: str, *, fmt: str = "table", output: str | None = None,
              config: str | None = None, fail_on: str = "fail", incomplete: str = "warn",
              jump: float = 0.30, roles: str = "final,mtp", gains: str | None = None,
              plot: str | None = None, plot_size: str = "1000x600", baseline: str | None = None,
              settle: float = 0.0, github: bool | None = None, format_hint: str | None = None,
              d_model: int | None = None, convention: str | None = None,
              width: int | None = None) -> int:
    """Discover, audit, build the trend, render it; return the exit code."""
    from ckpt_audit.commands._common import console
    from ckpt_audit.core.policy import load_policy
    from ckpt_audit.core.verdict import parse_fail_on
    from ckpt_audit.report.plot import plot_lines
    from ckpt_audit.report.runs import print_trend, to_text, trend_markdown
    from ckpt_audit.runs.audit import audit_checkpoints
    from ckpt_audit.runs.discovery import discover_run
    from ckpt_audit.runs.trend import build_trend, series, trend_to_dict

    _runs.check_choice("--format", fmt, FORMATS)
    _runs.check_choice("--incomplete", incomplete, _runs.INCOMPLETE_CHOICES)
    threshold = parse_fail_on(fail_on)
    finite("--jump", jump)
    if jump <= 0:
        raise CkptAuditError("--jump must be a positive fraction (0.3 = 30 %)")
    size = parse_size(plot_size) if plot else None
    _runs.refuse_inside_any(output, [run])
    _runs.refuse_inside_any(plot, [run])
    policy = load_policy(config)
    discovered = discover_run(run, settle=settle)
    results = audit_checkpoints(discovered.checkpoints,
                                **_runs.audit_kwargs(policy, format_hint, d_model, convention))
    results = _runs.apply_baseline(results, baseline, policy)
    role_list = tuple(r.strip() for r in roles.split(",") if r.strip())
    known = [r.value for r in Role]
    unknown = [r for r in role_list if r not in known]
    if unknown:
        raise CkptAuditError(f"--roles: unknown role {unknown[0]!r} (known: {', '.join(known)})")
    trend = build_trend(run, results, roles=role_list, pattern=gains, jump=jump)
    if fmt == "json":
        _runs.write(json.dumps(trend_to_dict(trend), indent=2) + "\n", output)
    elif fmt == "markdown":
        _runs.write(trend_markdown(trend), output)
    elif fmt == "junit":
        _runs.write(_runs.junit(f"trend {run}", trend.results, threshold), output)
    elif output:
        _runs.write(to_text(lambda con: print_trend(trend, con), width), output)
    else:
        print_trend(trend, console(width))
    if plot and size:
        lines = {name: series(trend.results, name) for name in trend.tracked}
        plot_lines(plot, lines, _runs.band_list(policy), title=f"ckpt-audit trend: {run}",
                   width=size[0], height=size[1])
    _runs.ci_outputs(trend.results, trend_markdown(trend), github)
    return _runs.exit_code(trend.results, threshold, incomplete)


def register(app: typer.Typer) -> None:
    @app.command("trend")
    def trend(
        run: str = typer.Argument(..., help="Run folder (checkpoint-N, iter_N, global_stepN, "
                                            "step-N children)."),
        fmt: str = typer.Option("table", "--format", "-f", help="table | json | markdown | junit"),
        output: str | None = typer.Option(None, "--output", "-o", help="Write to FILE."),
        config: str | None = typer.Option(None, "--config", "-c", help="Policy TOML."),
        fail_on: str = typer.Option("fail", "--fail-on", help="Exit 1 at: info | warn | fail."),
        incomplete: str = typer.Option("warn", "--incomplete",
                                       help="An incomplete checkpoint counts as: ignore | warn "
                                            "| fail (for the exit code)."),
        jump: float = typer.Option(0.30, "--jump",
                                   help="Alert when a ratio changes by more than this fraction "
                                        "between consecutive checkpoints."),
        roles: str = typer.Option("final,mtp", "--roles",
                                  help="Roles to follow (comma list; 'all' for every gain)."),
        gains: str | None = typer.Option(None, "--gains",
                                            help="Follow the gains whose name matches REGEX "
                                                 "(instead of --roles)."),
        plot: str | None = typer.Option(None, "--plot", help="Write a PNG: ratio vs step."),
        plot_size: str = typer.Option("1000x600", "--plot-size", help="PNG size WxH (pixels)."),
        baseline: str | None = typer.Option(None, "--baseline",
                                               help="Known-good audit JSON: fail on drift."),
        settle: float = typer.Option(0.0, "--settle", min=0.0,
                                     help="Stat twice SECONDS apart; changes mean 'still being "
                                          "written'."),
        github: bool | None = typer.Option(None, "--github/--no-github",
                                              help="GitHub annotations + step summary "
                                                   "(default: when GITHUB_ACTIONS=true)."),
        format_hint: str | None = typer.Option(None, "--format-hint"),
        d_model: int | None = typer.Option(None, "--d-model", min=1),
        convention: str | None = typer.Option(None, "--convention"),
        width: int | None = typer.Option(None, "--width", min=40, help="Pin the width."),
    ) -> None:
        """Final and MTP norms over a run: ratios, first step out of band, jumps, plot."""
        code = run_trend(run, fmt=fmt, output=output, config=config, fail_on=fail_on,
                         incomplete=incomplete, jump=jump, roles=roles, gains=gains, plot=plot,
                         plot_size=plot_size, baseline=baseline, settle=settle, github=github,
                         format_hint=format_hint, d_model=d_model, convention=convention,
                         width=width)
        raise typer.Exit(code)
