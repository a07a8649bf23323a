"""``ckpt-audit demo``: write a small run of checkpoints into a folder it names, audit it, and
leave it there with commands to try on it (and how to remove it)."""

from __future__ import annotations

import os
import shlex
from typing import Annotated

import typer

from ckpt_audit.commands.options import WidthOpt
from ckpt_audit.errors import CkptAuditError

#: The folder's name under the current directory when ``--dir`` is not given.
DEFAULT_DIR = "ckpt-audit-demo"
#: A file marking a folder as written by ``demo`` (only such a folder is ever rewritten).
MARKER = ".ckpt-audit-demo"


def demo_folder(directory: str | None) -> str:
    """The folder to write: ``--dir`` or ./ckpt-audit-demo; refused when it exists, is not
    empty and was not written by ``demo`` (never overwrite someone's files)."""
    root = directory or DEFAULT_DIR
    if os.path.exists(root):
        if not os.path.isdir(root):
            raise CkptAuditError("exists and is not a folder; choose another with --dir", root)
        if os.listdir(root) and not os.path.exists(os.path.join(root, MARKER)):
            raise CkptAuditError("exists and was not written by `ckpt-audit demo`; choose "
                                 "another folder with --dir", root)
    os.makedirs(root, exist_ok=True)
    with open(os.path.join(root, MARKER), "w", encoding="utf-8") as fh:
        fh.write("written by `ckpt-audit demo`; safe to delete\n")
    return root


def shown(path: str) -> str:
    """A path as the user should type it: relative to the current directory when inside it,
    quoted for the shell."""
    rel = os.path.relpath(path)
    return shlex.quote(path if rel.startswith("..") else rel)


def register(app: typer.Typer) -> None:
    @app.command("demo")
    def demo(
        directory: Annotated[str | None, typer.Option(
            "--dir", help=f"Write the demo checkpoints here (default: ./{DEFAULT_DIR}).")] = None,
        width: WidthOpt = None,
    ) -> None:
        """Audit a demo run written on the spot (step 0, healthy, collapsed, exploded, MTP)."""
        from rich.table import Table

        from ckpt_audit.commands._common import console
        from ckpt_audit.core.audit import audit_checkpoint
        from ckpt_audit.demo import write_demo_run
        from ckpt_audit.report.summary import fmt_ratio
        from ckpt_audit.report.table import STYLE, VERDICT_STYLE, print_table

        con = console(width, soft_wrap=False)
        root = demo_folder(directory)
        paths = write_demo_run(root)
        con.print(f"[bold]ckpt-audit demo[/bold]: wrote {len(paths)} checkpoints under "
                  f"{shown(root)}")
        reports = {label: audit_checkpoint(p) for label, p in paths.items()}
        t = Table(title="Demo run: final norm per checkpoint", title_justify="left")
        for col in ("checkpoint", "‖γ_final‖₂", "ratio", "status", "verdict"):
            t.add_column(col, no_wrap=True)
        for label, rep in reports.items():
            f = rep.final
            assert f is not None
            t.add_row(label, f"{f.stats.norm:.3f}", fmt_ratio(f.stats.ratio),
                      f"[{STYLE[f.severity]}]{f.status.value}[/]",
                      f"[{VERDICT_STYLE[rep.verdict]}]{rep.verdict}[/]")
        con.print(t)
        con.print("\n[bold]Full report of the collapsed checkpoint:[/bold]")
        print_table(reports["step 2000"], con)
        con.print("\n[bold]Full report of the MTP checkpoint:[/bold]")
        print_table(reports["mtp"], con)
        run = os.path.dirname(paths["step 0"])
        _print_trend(con, run)
        con.print("\nTry:", soft_wrap=True)
        for line in try_lines(paths, run):
            con.print(f"  {line}", soft_wrap=True, highlight=False, markup=False)
        con.print(f"\nThe demo folder stays; remove it with: rm -r {shown(root)}",
                  soft_wrap=True, highlight=False, markup=False)


def try_lines(paths: dict[str, str], run: str) -> list[str]:
    """Commands that work on the demo folder as printed (tests run each one)."""
    return [f"ckpt-audit audit {shown(paths['step 2000'])} --format json",
            f"ckpt-audit trend {shown(run)} --format markdown",
            f"ckpt-audit diff {shown(paths['step 0'])} {shown(paths['step 3000'])}",
            f"ckpt-audit audit {shown(paths['mtp'])}"]


def _print_trend(con: object, run: str) -> None:
    """The same run seen by ``ckpt-audit trend``: ratio per step, first step out of band."""
    from ckpt_audit.report.runs import print_trend
    from ckpt_audit.runs.audit import audit_checkpoints
    from ckpt_audit.runs.discovery import discover_run
    from ckpt_audit.runs.trend import build_trend

    trend = build_trend(run, audit_checkpoints(discover_run(run).checkpoints))
    con.print("\n[bold]The run over time (ckpt-audit trend):[/bold]")  # type: ignore[attr-defined]
    print_trend(trend, con)  # type: ignore[arg-type]
