"""``ckpt-audit diff CKPT_A CKPT_B``: per gain, both ratios and the change."""

from __future__ import annotations

import os
from typing import Annotated

import typer

from ckpt_audit.commands._common import finite, github_outputs, refuse_inside_any, write_document
from ckpt_audit.commands.options import (
    ConfigOpt,
    ConventionOpt,
    DModelOpt,
    FormatHintOpt,
    GithubOpt,
    OutputFormat,
    OutputOpt,
    ReadOptions,
    WidthOpt,
)


def run_folders_of(*checkpoints: str) -> list[str]:
    """The run folders that hold these checkpoints (a child named like ``checkpoint-N``): an
    output file inside one would be taken for part of the run."""
    from ckpt_audit.runs.discovery import parse_name

    out = []
    for ck in checkpoints:
        if "://" not in ck and parse_name(os.path.basename(os.path.normpath(ck))):
            out.append(os.path.dirname(os.path.abspath(ck)))
    return out


def run_diff(a: str, b: str, *, fmt: OutputFormat = OutputFormat.TABLE,
             output: str | None = None, config: str | None = None, show: int = 30,
             read: ReadOptions = ReadOptions(), width: int | None = None,
             max_change: float | None = None, github: bool | None = None) -> int:
    """Audit both checkpoints and diff them; exit 1 when ``max_change`` is set and exceeded."""
    from ckpt_audit.core.audit import audit_checkpoint
    from ckpt_audit.core.policy import load_policy
    from ckpt_audit.report import RenderOptions
    from ckpt_audit.runs.compare import Diff, diff_reports

    finite("--max-change", max_change)
    refuse_inside_any(output, [a, b, *run_folders_of(a, b)])
    policy = load_policy(config)
    kwargs = read.audit_kwargs(policy)
    ra, rb = audit_checkpoint(a, **kwargs), audit_checkpoint(b, **kwargs)
    doc = Diff(ra, rb, tuple(diff_reports(ra, rb)), max_change)
    opts = RenderOptions(width, show=show)
    write_document(doc, fmt.value, output, opts, [a, b])
    github_outputs(doc, github, opts, [a, b, *run_folders_of(a, b)])
    return 1 if doc.verdict == "fail" else 0


def register(app: typer.Typer) -> None:
    @app.command("diff")
    def diff(
        a: Annotated[str, typer.Argument(help="Checkpoint A (file, folder or URL).")],
        b: Annotated[str, typer.Argument(help="Checkpoint B.")],
        fmt: Annotated[OutputFormat, typer.Option("--format", "-f",
                                                  help="Report format.")] = OutputFormat.TABLE,
        output: OutputOpt = None,
        config: ConfigOpt = None,
        show: Annotated[int, typer.Option("--show", min=1,
                                          help="Rows to print in the table.")] = 30,
        max_change: Annotated[float | None, typer.Option(
            "--max-change", min=0.0,
            help="Exit 1 when a gain's |change| exceeds this (or a gain is in one "
                 "only).")] = None,
        format_hint: FormatHintOpt = None,
        d_model: DModelOpt = None,
        convention: ConventionOpt = None,
        width: WidthOpt = None,
        github: GithubOpt = None,
    ) -> None:
        """Per gain: ratio in A, ratio in B and the change, largest change first."""
        raise typer.Exit(run_diff(a, b, fmt=fmt, output=output, config=config, show=show,
                                  read=ReadOptions.of(format_hint, d_model, convention),
                                  width=width, max_change=max_change, github=github))
