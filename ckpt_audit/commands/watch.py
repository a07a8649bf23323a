"""``ckpt-audit watch RUN``: audit each new complete checkpoint of a run once, as it lands."""

from __future__ import annotations

import json
import sys
import time

import typer

from ckpt_audit.commands import _runs
from ckpt_audit.errors import CkptAuditError, DetectionError


def _line(res) -> str:  # type: ignore[no-untyped-def]
    final = res.final
    head = f"step {res.checkpoint.step:>8}  {res.checkpoint.name}  {res.verdict.upper()}"
    if final is not None:
        head += f"  final {final.name} ratio {final.stats.ratio:.3f} {final.status.value}"
    if res.error:
        head += f"  error: {res.error}"
    lines = [head]
    for f in res.findings:
        if f.severity.rank >= 2:
            lines.append(f"    [{f.severity.value}] {f.code} {f.tensor or ''}: {f.message}")
    return "\n".join(lines) + "\n"


def run_watch(run: str, *, interval: float = 60.0, max_polls: int | None = None,
              exit_on: str = "never", state: str | None = None, config: str | None = None,
              fmt: str = "table", baseline: str | None = None, settle: float = 2.0,
              junit_path: str | None = None, github: bool | None = None,
              format_hint: str | None = None, d_model: int | None = None,
              convention: str | None = None, reference: str | None = None) -> int:
    """Poll ``run``; return 1 as soon as a checkpoint reaches ``exit_on``, else 0 after
    ``max_polls`` polls (never, when ``max_polls`` is ``None``)."""
    import os

    from ckpt_audit.core.policy import load_policy
    from ckpt_audit.report.json_report import report_to_dict
    from ckpt_audit.runs.audit import audit_one
    from ckpt_audit.runs.discovery import Run, discover_run
    from ckpt_audit.runs.watch_state import (
        check_state_path,
        default_state_path,
        load_state,
        pending,
    )
    from ckpt_audit.runs.watch_state import save_state as save

    _runs.check_choice("--exit-on", exit_on, ("never", "warn", "fail"))
    _runs.check_choice("--format", fmt, ("table", "json"))
    if interval < 0:
        raise CkptAuditError("--interval must be >= 0")
    if not os.path.isdir(run):
        raise DetectionError("not a run folder (expected a folder of checkpoints)", run)
    state_path = state or default_state_path(run)
    check_state_path(state_path, run)
    _runs.refuse_inside_any(junit_path, [run])
    policy = load_policy(config)
    kwargs = _runs.with_reference(_runs.audit_kwargs(policy, format_hint, d_model, convention),
                                  reference)
    st = load_state(state_path, run)
    from ckpt_audit.records import Severity

    threshold = {"warn": Severity.WARN, "fail": Severity.FAIL}.get(exit_on)
    session: list = []
    told_incomplete: set[tuple[str, tuple[str, ...]]] = set()
    polls = 0
    while True:
        polls += 1
        try:
            discovered = discover_run(run, settle=settle)
        except DetectionError:
            discovered = Run(run, ())  # no checkpoint yet: keep waiting
        for ck in discovered.incomplete:
            key = (ck.path, ck.problems)
            if key not in told_incomplete and fmt == "table":
                told_incomplete.add(key)
                sys.stdout.write(f"waiting  {ck.name}: incomplete: {'; '.join(ck.problems)}\n")
        for ck, fp in pending(discovered, st):
            res = _runs.apply_baseline((audit_one(ck, **kwargs),), baseline, policy)[0]
            session.append(res)
            if fmt == "json":
                doc = {"schema": "ckpt-audit.watch/1", "run": run, "path": ck.path,
                       "step": ck.step, "verdict": res.verdict, "error": res.error,
                       "report": report_to_dict(res.report) if res.report else None,
                       "extra_findings": [{"severity": f.severity.value, "code": f.code,
                                           "tensor": f.tensor, "message": f.message}
                                          for f in res.extra]}
                sys.stdout.write(json.dumps(doc) + "\n")
            else:
                sys.stdout.write(_line(res))
            sys.stdout.flush()
            st.record(ck, fp, res.verdict)
            save(state_path, st)
            _runs.ci_outputs([res], None, github)
            if junit_path:
                _runs.write(_runs.junit(f"watch {run}", session, threshold or Severity.FAIL),
                            junit_path)
            if threshold is not None and _runs.result_gates(res, threshold, "ignore"):
                sys.stdout.write(f"stopping: {ck.name} reached --exit-on {exit_on}\n")
                return 1
        if max_polls is not None and polls >= max_polls:
            return 0
        time.sleep(interval)


def register(app: typer.Typer) -> None:
    @app.command("watch")
    def watch(
        run: str = typer.Argument(..., help="Run folder to watch."),
        interval: float = typer.Option(60.0, "--interval", min=0.0, help="Seconds between polls."),
        max_polls: int | None = typer.Option(None, "--max-polls", min=1,
                                                help="Stop after N polls (default: forever)."),
        once: bool = typer.Option(False, "--once", help="Poll once (= --max-polls 1)."),
        exit_on: str = typer.Option("never", "--exit-on",
                                    help="Exit 1 when a checkpoint reaches: warn | fail | never."),
        state: str | None = typer.Option(None, "--state",
                                            help="State file (default: under the user cache "
                                                 "folder; never inside the run)."),
        config: str | None = typer.Option(None, "--config", "-c", help="Policy TOML."),
        fmt: str = typer.Option("table", "--format", "-f", help="table | json (JSON lines)"),
        baseline: str | None = typer.Option(None, "--baseline",
                                               help="Known-good audit JSON: fail on drift."),
        settle: float = typer.Option(2.0, "--settle", min=0.0,
                                     help="Stat twice SECONDS apart before auditing."),
        junit_path: str | None = typer.Option(None, "--junit", help="Keep a JUnit XML here."),
        github: bool | None = typer.Option(None, "--github/--no-github"),
        format_hint: str | None = typer.Option(None, "--format-hint"),
        d_model: int | None = typer.Option(None, "--d-model", min=1),
        convention: str | None = typer.Option(None, "--convention"),
        reference: str | None = typer.Option(
            None, "--reference",
            help="Ratios to this checkpoint's same-named gains (a fine-tune's base) instead "
                 "of √n."),
    ) -> None:
        """Poll a run for new complete checkpoints and audit each exactly once."""
        raise typer.Exit(run_watch(run, interval=interval, max_polls=1 if once else max_polls,
                                   exit_on=exit_on, state=state, config=config, fmt=fmt,
                                   baseline=baseline, settle=settle, junit_path=junit_path,
                                   github=github, format_hint=format_hint, d_model=d_model,
                                   convention=convention, reference=reference))
