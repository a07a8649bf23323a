"""``ckpt-audit demo``: write a small run of checkpoints in a temporary folder and audit it."""

from __future__ import annotations

import os
import shutil
import tempfile

import typer

from ckpt_audit.errors import CkptAuditError


def register(app: typer.Typer) -> None:
    @app.command("demo")
    def demo(
        directory: str | None = typer.Option(
            None, "--dir", help="Write the demo checkpoints here and keep them."),
        width: int | None = typer.Option(None, "--width", min=40, help="Pin the width."),
    ) -> None:
        """Audit an embedded demo run (step 0, healthy, collapsed, exploded, MTP): no network."""
        from rich.console import Console
        from rich.table import Table

        from ckpt_audit.core.audit import audit_checkpoint
        from ckpt_audit.demo import write_demo_run
        from ckpt_audit.report.summary import fmt_ratio
        from ckpt_audit.report.table import STYLE, VERDICT_STYLE, print_table

        con = Console(width=width)
        if directory is not None and os.path.exists(directory) and not os.path.isdir(directory):
            raise CkptAuditError("--dir must be a folder (it is a file)", directory)
        root = directory or tempfile.mkdtemp(prefix="ckpt-audit-demo-")
        try:
            try:
                paths = write_demo_run(root)
            except OSError as exc:
                raise CkptAuditError(f"cannot write the demo ({exc.strerror})", root) from None
            con.print(f"[bold]ckpt-audit demo[/bold]: wrote {len(paths)} checkpoints under "
                      f"{root}")
            reports = {label: audit_checkpoint(p) for label, p in paths.items()}
            t = Table(title="Demo run: final norm per checkpoint", title_justify="left")
            for col in ("checkpoint", "‖γ_final‖₂", "ratio", "status", "verdict"):
                t.add_column(col)
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
            _print_trend(con, os.path.dirname(paths["step 0"]))
            con.print(f"\nTry: ckpt-audit audit {paths['step 2000']} --format json")
        finally:
            if directory is None:
                shutil.rmtree(root, ignore_errors=True)


def _print_trend(con: object, run: str) -> None:
    """The same run seen by ``ckpt-audit trend``: ratio per step, first step out of band."""
    from ckpt_audit.report.runs import print_trend
    from ckpt_audit.runs.audit import audit_checkpoints
    from ckpt_audit.runs.discovery import discover_run
    from ckpt_audit.runs.trend import build_trend

    trend = build_trend(run, audit_checkpoints(discover_run(run).checkpoints))
    con.print("\n[bold]The run over time (ckpt-audit trend):[/bold]")  # type: ignore[attr-defined]
    print_trend(trend, con)  # type: ignore[arg-type]
    con.print(f"Try: ckpt-audit trend {run} --plot trend.png")  # type: ignore[attr-defined]
