"""``ckpt-audit audit PATH``: the norm-health audit of one checkpoint."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from ckpt_audit.commands._common import finite, github_outputs, write_document
from ckpt_audit.commands.options import (
    AllowRedirectHostOpt,
    AuditIncomplete,
    AuditIncompleteOpt,
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
    ReferenceOpt,
    StateKeyOpt,
    TimeoutOpt,
    WidthOpt,
    flag,
)
from ckpt_audit.errors import IncompleteError, error_text
from ckpt_audit.storage import RemoteOptions, remote_options


def check_complete(path: str, incomplete: AuditIncomplete) -> bool:
    """Completeness before any verdict, by the rules ``trend`` applies to each checkpoint of a
    run (:func:`ckpt_audit.runs.discovery.checkpoint_problems`). Raises
    :class:`IncompleteError` (exit 2), or with ``--incomplete fail`` writes the same line and
    returns True (exit 1). Local paths only: a remote checkpoint's missing shard is a 404."""
    import os

    from ckpt_audit.runs.discovery import checkpoint_problems
    from ckpt_audit.storage import is_url

    if is_url(path) or not os.path.exists(path):
        return False
    # The reader opened next validates every safetensors header against its file (a truncated
    # shard is refused there, exit 2), so the headers are not decoded here a first time.
    problems = checkpoint_problems(path, headers=False)
    if not problems:
        return False
    err = IncompleteError("incomplete checkpoint: " + "; ".join(problems), path)
    if incomplete is AuditIncomplete.FAIL:
        sys.stderr.write(error_text(err) + "\n")
        return True
    raise err


def run_audit(path: str, *, fmt: OutputFormat = OutputFormat.TABLE, output: str | None = None,
              config: str | None = None, fail_on: FailOn = FailOn.FAIL,
              read: ReadOptions = ReadOptions(), expect_init: bool = False,
              device: str = "auto", show: int = 20, width: int | None = None,
              baseline: str | None = None, probe: str | None = None,
              github: bool | None = None,
              incomplete: AuditIncomplete = AuditIncomplete.ERROR, timeout: float = 300.0,
              allow_redirect_host: bool = False) -> int:
    """Audit, render, and return the exit code (0 pass, 1 findings at/above ``fail_on``)."""
    from ckpt_audit.commands._runs import band_list
    from ckpt_audit.core.audit import audit_checkpoint
    from ckpt_audit.core.policy import load_policy
    from ckpt_audit.core.verdict import exit_code
    from ckpt_audit.report import AuditDocument, RenderOptions

    policy = load_policy(config)
    if check_complete(path, incomplete):
        return 1
    finite("--timeout", timeout)
    remote = RemoteOptions(timeout=min(30.0, timeout), total_timeout=timeout,
                           allow_redirect_host=allow_redirect_host)
    with remote_options(remote):
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
    github_outputs(doc, github, opts, [path])
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
        reference: ReferenceOpt = None,
        state_key: StateKeyOpt = None,
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
        incomplete: AuditIncompleteOpt = AuditIncomplete.ERROR,
        timeout: TimeoutOpt = 300.0,
        allow_redirect_host: AllowRedirectHostOpt = False,
    ) -> None:
        """Audit every norm gain of a checkpoint against the policy's bands."""
        from contextlib import nullcontext

        from ckpt_audit.core.audit import gc_paused

        # the whole command, not just the audit: the completeness check parses the shard index
        # and the report renders ~10^4 JSON values, and the collector's passes find no garbage
        # (a --probe runs a model: that keeps the collector)
        with gc_paused() if probe is None else nullcontext():
            code = run_audit(path, fmt=fmt, output=output, config=config, fail_on=fail_on,
                             read=ReadOptions.of(format_hint, d_model, convention, reference,
                                                 state_key),
                             expect_init=expect_init, device=device.value,
                             show=show, width=width, baseline=baseline, probe=probe,
                             github=github, incomplete=incomplete, timeout=timeout,
                             allow_redirect_host=allow_redirect_host)
        raise typer.Exit(code)
