"""``ckpt-audit audit PATH``: the norm-health audit of one checkpoint."""

from __future__ import annotations

from typing import Annotated

import typer

from ckpt_audit.commands._common import github_outputs, write_document
from ckpt_audit.commands.options import (
    BaselineOpt,
    ConfigOpt,
    ConventionOpt,
    Device,
    DeviceOpt,
    DModelOpt,
    FailOn,
    FailOnOpt,
    FormatHintOpt,
    GithubOpt,
    OutputFormat,
    OutputOpt,
    ReadOptions,
    WidthOpt,
    flag,
)


def run_audit(path: str, *, fmt: OutputFormat = OutputFormat.TABLE, output: str | None = None,
              config: str | None = None, fail_on: FailOn = FailOn.FAIL,
              read: ReadOptions = ReadOptions(), expect_init: bool = False,
              device: str = "auto", show: int = 20, width: int | None = None,
              baseline: str | None = None, probe: str | None = None,
              github: bool | None = None) -> int:
    """Audit, render, and return the exit code (0 pass, 1 findings at/above ``fail_on``)."""
    from ckpt_audit.commands._runs import band_list
    from ckpt_audit.core.audit import audit_checkpoint
    from ckpt_audit.core.policy import load_policy
    from ckpt_audit.core.verdict import exit_code
    from ckpt_audit.report import AuditDocument, RenderOptions

    policy = load_policy(config)
    report = audit_checkpoint(path, **read.audit_kwargs(policy), expect_init=expect_init,
                              device=device)
    if baseline:
        from ckpt_audit.runs.gate import with_baseline

        report = with_baseline(report, baseline, policy)
    acceptance = None
    if probe:  # MTP acceptance figures (docs/MTP.md); runs the model, needs the mtp extra
        from ckpt_audit.mtp.engine import accept_summary
        from ckpt_audit.report.accept import summary_dict

        acceptance = summary_dict(accept_summary(path, probe, device=device))
    doc = AuditDocument(report, acceptance)
    if expect_init and not any(f.code == "init-mismatch" for f in report.findings):
        from ckpt_audit.commands._common import say

        say(f"ckpt-audit: step-0 check passed: all {len(report.norms)} gains have ‖γ‖₂ within "
            f"±{policy.init_tolerance} of √dim")
    opts = RenderOptions(width, fail_on.severity, show, bands=tuple(band_list(policy)))
    write_document(doc, fmt.value, output, opts, [path])
    github_outputs(doc, github, opts)
    return exit_code([report], fail_on.severity)


def register(app: typer.Typer) -> None:
    @app.command("audit")
    def audit(
        path: Annotated[str, typer.Argument(help="Checkpoint file, folder or URL.")],
        fmt: Annotated[OutputFormat, typer.Option("--format", "-f",
                                                  help="Report format.")] = OutputFormat.TABLE,
        output: OutputOpt = None,
        config: ConfigOpt = None,
        fail_on: FailOnOpt = FailOn.FAIL,
        format_hint: FormatHintOpt = None,
        d_model: DModelOpt = None,
        convention: ConventionOpt = None,
        expect_init: Annotated[bool, flag(
            "--expect-init", help="Step-0 check: every gain must be all ones.")] = False,
        device: DeviceOpt = Device.AUTO,
        show: Annotated[int, typer.Option("--show", min=0,
                                          help="Offending gains to list.")] = 20,
        width: WidthOpt = None,
        baseline: BaselineOpt = None,
        probe: Annotated[str | None, typer.Option(
            "--probe", help="Also measure MTP draft acceptance on this probe file "
                            "(JSONL or text; needs the mtp extra).")] = None,
        github: GithubOpt = None,
    ) -> None:
        """Audit every norm gain of a checkpoint against the policy's bands."""
        code = run_audit(path, fmt=fmt, output=output, config=config, fail_on=fail_on,
                         read=ReadOptions.of(format_hint, d_model, convention),
                         expect_init=expect_init, device=device.value,
                         show=show, width=width, baseline=baseline, probe=probe, github=github)
        raise typer.Exit(code)
