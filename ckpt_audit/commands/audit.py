"""``ckpt-audit audit PATH``: the norm-health audit of one checkpoint."""

from __future__ import annotations

import sys

import typer

from ckpt_audit.commands._common import console, emit, finite
from ckpt_audit.errors import CkptAuditError, IncompleteError, error_text
from ckpt_audit.records import Convention
from ckpt_audit.storage import RemoteOptions, remote_options

#: What an incomplete checkpoint makes ``audit`` do: a one-line error (exit 2) or a failed
#: gate (exit 1, for CI that treats "not there yet" as a failure rather than a tool error).
INCOMPLETE_CHOICES = ("error", "fail")


def check_complete(path: str, incomplete: str) -> bool:
    """Completeness before any verdict, by the rules ``trend`` applies to each checkpoint of a
    run (:func:`ckpt_audit.runs.discovery.checkpoint_problems`). Raises
    :class:`IncompleteError` (exit 2), or with ``incomplete="fail"`` writes the same line and
    returns True (exit 1). Local paths only: a remote checkpoint's missing shard is a 404."""
    import os

    from ckpt_audit.runs.discovery import checkpoint_problems
    from ckpt_audit.storage import is_url

    if is_url(path) or not os.path.exists(path):
        return False
    problems = checkpoint_problems(path)
    if not problems:
        return False
    err = IncompleteError("incomplete checkpoint: " + "; ".join(problems), path)
    if incomplete == "fail":
        sys.stderr.write(error_text(err) + "\n")
        return True
    raise err


def run_audit(
    path: str,
    fmt: str,
    output: str | None,
    config: str | None,
    fail_on: str,
    format_hint: str | None,
    d_model: int | None,
    convention: str | None,
    expect_init: bool,
    device: str,
    show: int,
    width: int | None,
    baseline: str | None = None,
    probe: str | None = None,
    incomplete: str = "error",
    timeout: float = 300.0,
    allow_redirect_host: bool = False,
) -> int:
    """Audit, render, and return the exit code (0 pass, 1 findings at/above fail_on)."""
    from ckpt_audit.core.audit import audit_checkpoint
    from ckpt_audit.core.policy import load_policy
    from ckpt_audit.core.verdict import exit_code, parse_fail_on
    from ckpt_audit.report import FORMATS, render

    if fmt not in FORMATS:
        raise CkptAuditError(f"--format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    threshold = parse_fail_on(fail_on)
    conv = None
    if convention is not None:
        try:
            conv = Convention(convention)
        except ValueError:
            raise CkptAuditError("--convention must be direct, offset or none") from None
    if incomplete not in INCOMPLETE_CHOICES:
        raise CkptAuditError(f"--incomplete must be one of {', '.join(INCOMPLETE_CHOICES)}, "
                             f"not {incomplete!r}")
    policy = load_policy(config)
    if check_complete(path, incomplete):
        return 1
    finite("--timeout", timeout)
    remote = RemoteOptions(timeout=min(30.0, timeout), total_timeout=timeout,
                           allow_redirect_host=allow_redirect_host)
    with remote_options(remote):
        report = audit_checkpoint(path, policy=policy, format_hint=format_hint, d_model=d_model,
                                  convention=conv, expect_init=expect_init, device=device)
    if baseline:
        from ckpt_audit.runs.gate import with_baseline

        report = with_baseline(report, baseline, policy)
    summary = None
    if probe:  # MTP acceptance figures (docs/MTP.md); runs the model, needs the mtp extra
        from ckpt_audit.mtp.engine import accept_summary

        summary = accept_summary(path, probe, device=device)
    if fmt == "table" and output is None:
        from ckpt_audit.report.table import print_table

        print_table(report, console(width), show=show)
        if summary is not None:
            from ckpt_audit.report.accept import print_summary

            print_summary(summary, console(width))
    else:
        text = render(report, fmt, width=width, fail_on=threshold, show=show)
        if summary is not None and fmt == "json":
            import json

            obj = json.loads(text)
            obj["acceptance"] = summary
            text = json.dumps(obj, indent=2, allow_nan=False) + "\n"
        elif summary is not None and fmt == "markdown":
            from ckpt_audit.report.accept import summary_markdown

            text += summary_markdown(summary)
        elif summary is not None and fmt == "table":
            from io import StringIO

            from rich.console import Console

            from ckpt_audit.report.accept import print_summary

            buf = StringIO()
            print_summary(summary, Console(file=buf, width=width or 120, soft_wrap=False))
            text += buf.getvalue()
        emit(text, output, [path])
    return exit_code([report], threshold)


def register(app: typer.Typer) -> None:
    @app.command("audit")
    def audit(
        path: str = typer.Argument(..., help="Checkpoint file, folder or URL."),
        fmt: str = typer.Option("table", "--format", "-f",
                                help="table | json | markdown | junit"),
        output: str | None = typer.Option(None, "--output", "-o",
                                             help="Write the report to FILE."),
        config: str | None = typer.Option(None, "--config", "-c",
                                             help="Policy TOML (layered over the default)."),
        fail_on: str = typer.Option("fail", "--fail-on",
                                    help="Exit 1 on findings at or above: info | warn | fail."),
        format_hint: str | None = typer.Option(None, "--format-hint",
                                                  help="Force a checkpoint format."),
        d_model: int | None = typer.Option(None, "--d-model", min=1,
                                              help="Override d_model."),
        convention: str | None = typer.Option(None, "--convention",
                                                 help="Force direct | offset | none."),
        expect_init: bool = typer.Option(False, "--expect-init",
                                         help="Step-0 check: every gain must be all ones."),
        device: str = typer.Option("auto", "--device", help="auto | cpu | cuda."),
        show: int = typer.Option(20, "--show", min=0, help="Offending gains to list."),
        width: int | None = typer.Option(None, "--width", min=40,
                                         help="Pin the table width."),
        baseline: str | None = typer.Option(
            None, "--baseline", help="Fail on drift from a known-good JSON report."),
        probe: str | None = typer.Option(
            None, "--probe", help="Also measure MTP draft acceptance on this probe file."),
        incomplete: str = typer.Option(
            "error", "--incomplete",
            help="An incomplete checkpoint is: error (exit 2) | fail (exit 1)."),
        timeout: float = typer.Option(
            300.0, "--timeout", min=1.0,
            help="Seconds all remote reads of the audit may take (each read: at most 30)."),
        allow_redirect_host: bool = typer.Option(
            False, "--allow-redirect-host",
            help="Follow redirects to another host (the Hugging Face hub's CDN)."),
    ) -> None:
        """Audit every norm gain of a checkpoint against the policy's bands."""
        code = run_audit(path, fmt, output, config, fail_on, format_hint, d_model, convention,
                         expect_init, device, show, width, baseline, probe, incomplete,
                         timeout, allow_redirect_host)
        raise typer.Exit(code)
