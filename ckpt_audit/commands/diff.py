"""``ckpt-audit diff CKPT_A CKPT_B``: per gain, both ratios and the change."""

from __future__ import annotations

import json
import os

import typer

from ckpt_audit.commands import _runs
from ckpt_audit.commands._common import finite


def run_folders_of(*checkpoints: str) -> list[str]:
    """The run folders that hold these checkpoints (a child named like ``checkpoint-N``): an
    output file inside one would be taken for part of the run."""
    from ckpt_audit.runs.discovery import parse_name

    out = []
    for ck in checkpoints:
        if "://" not in ck and parse_name(os.path.basename(os.path.normpath(ck))):
            out.append(os.path.dirname(os.path.abspath(ck)))
    return out


def run_diff(a: str, b: str, *, fmt: str = "table", output: str | None = None,
             config: str | None = None, show: int = 30, format_hint: str | None = None,
             d_model: int | None = None, convention: str | None = None,
             width: int | None = None, max_change: float | None = None) -> int:
    """Audit both checkpoints and diff them; exit 1 when ``max_change`` is set and exceeded."""
    import math

    from ckpt_audit.commands._common import console
    from ckpt_audit.core.audit import audit_checkpoint
    from ckpt_audit.core.policy import load_policy
    from ckpt_audit.report.runs import print_diff, to_text
    from ckpt_audit.runs.compare import diff_reports, diff_to_dict

    _runs.check_choice("--format", fmt, ("table", "json"))
    finite("--max-change", max_change)
    _runs.refuse_inside_any(output, [a, b, *run_folders_of(a, b)])
    policy = load_policy(config)
    kwargs = _runs.audit_kwargs(policy, format_hint, d_model, convention)
    ra, rb = audit_checkpoint(a, **kwargs), audit_checkpoint(b, **kwargs)
    rows = diff_reports(ra, rb)
    if fmt == "json":
        _runs.write(json.dumps(diff_to_dict(ra, rb, rows), indent=2) + "\n", output)
    elif output:
        _runs.write(to_text(lambda c: print_diff(a, b, rows, c, show), width), output)
    else:
        print_diff(a, b, rows, console(width), show)
    if max_change is None:
        return 0
    return 1 if any(d.change is None or not math.isfinite(d.change) or abs(d.change) > max_change
                    for d in rows) else 0


def register(app: typer.Typer) -> None:
    @app.command("diff")
    def diff(
        a: str = typer.Argument(..., help="Checkpoint A (file, folder or URL)."),
        b: str = typer.Argument(..., help="Checkpoint B."),
        fmt: str = typer.Option("table", "--format", "-f", help="table | json"),
        output: str | None = typer.Option(None, "--output", "-o", help="Write to FILE."),
        config: str | None = typer.Option(None, "--config", "-c", help="Policy TOML."),
        show: int = typer.Option(30, "--show", min=1, help="Rows to print in the table."),
        max_change: float | None = typer.Option(
            None, "--max-change", min=0.0,
            help="Exit 1 when a gain's |change| exceeds this (or a gain is in one only)."),
        format_hint: str | None = typer.Option(None, "--format-hint"),
        d_model: int | None = typer.Option(None, "--d-model", min=1),
        convention: str | None = typer.Option(None, "--convention"),
        width: int | None = typer.Option(None, "--width", min=40),
    ) -> None:
        """Per gain: ratio in A, ratio in B and the change, largest change first."""
        raise typer.Exit(run_diff(a, b, fmt=fmt, output=output, config=config, show=show,
                                  format_hint=format_hint, d_model=d_model,
                                  convention=convention, width=width, max_change=max_change))
