"""``ckpt-audit watch RUN``: audit each new complete checkpoint of a run once, as it lands."""

from __future__ import annotations

import json
import sys
import time
from dataclasses import replace
from typing import Annotated

import typer

from ckpt_audit.commands import _runs
from ckpt_audit.commands._common import emit, refuse_inside_any, say
from ckpt_audit.commands.options import (
    BaselineOpt,
    ConfigOpt,
    ConventionOpt,
    DModelOpt,
    ExitOn,
    FormatHintOpt,
    GithubOpt,
    ReadOptions,
    SettleOpt,
    TableOrJson,
    flag,
)
from ckpt_audit.errors import CkptAuditError, DetectionError


def _line(res) -> str:  # type: ignore[no-untyped-def]
    final = res.final
    head = f"step {res.checkpoint.step:>8}  {res.checkpoint.name}  {res.verdict.upper()}"
    if final is not None:
        head += f"  final {final.name} ratio {final.stats.ratio:.3f} {final.status.value}"
    if res.error:
        head += f"  error: {res.error}"
    from ckpt_audit.report.findings import finding_line, worth_showing

    return "\n".join([head] + [f"    {finding_line(f)}" for f in worth_showing(res.findings)]
                     ) + "\n"


def _context(complete, ck, cache, kwargs):  # type: ignore[no-untyped-def]
    """The run's first complete checkpoint and the one before ``ck``, audited (cached)."""
    from ckpt_audit.runs.audit import audit_one

    idx = next((i for i, c in enumerate(complete) if c.path == ck.path), 0)
    picks = [c for c in {id(c): c for c in (complete[0], complete[idx - 1])}.values()
             if c.step < ck.step] if idx > 0 else []
    out = []
    for c in sorted(picks, key=lambda c: c.step):
        if c.path not in cache:
            cache[c.path] = audit_one(c, **kwargs)
        out.append(cache[c.path])
    return out


def run_watch(run: str, *, interval: float = 60.0, max_polls: int | None = None,
              exit_on: ExitOn = ExitOn.NEVER, state: str | None = None,
              config: str | None = None, fmt: TableOrJson = TableOrJson.TABLE,
              baseline: str | None = None, settle: float = 2.0, junit_path: str | None = None,
              github: bool | None = None, read: ReadOptions = ReadOptions()) -> int:
    """Poll ``run``; return 1 as soon as a checkpoint reaches ``exit_on``, else 0 after
    ``max_polls`` polls (never, when ``max_polls`` is ``None``)."""
    import os

    from ckpt_audit.core.policy import load_policy
    from ckpt_audit.report.findings import finding_to_dict
    from ckpt_audit.report.json_report import report_to_dict
    from ckpt_audit.report.junit import render_suites, run_suites
    from ckpt_audit.runs.audit import CheckpointResult, audit_one
    from ckpt_audit.runs.discovery import Run, discover_run
    from ckpt_audit.runs.trend import signals_at
    from ckpt_audit.runs.watch_state import (
        check_state_path,
        default_state_path,
        load_state,
        pending,
    )
    from ckpt_audit.runs.watch_state import save_state as save

    if interval < 0:
        raise CkptAuditError("--interval must be >= 0")
    if not os.path.isdir(run):
        raise DetectionError("not a run folder (expected a folder of checkpoints)", run)
    state_path = state or default_state_path(run)
    check_state_path(state_path, run)
    refuse_inside_any(junit_path, [run])
    policy = load_policy(config)
    kwargs = read.audit_kwargs(policy)
    st = load_state(state_path, run)
    say(f"ckpt-audit watch: {run}; state file {state_path}")
    from ckpt_audit.records import Severity

    threshold = {"warn": Severity.WARN, "fail": Severity.FAIL}.get(exit_on.value)
    session: list = []
    cache: dict[str, CheckpointResult] = {}
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
            if key not in told_incomplete and fmt is TableOrJson.TABLE:
                told_incomplete.add(key)
                sys.stdout.write(f"waiting  {ck.name}: incomplete: {'; '.join(ck.problems)}\n")
        todo = pending(discovered, st)
        if not todo:
            say(f"ckpt-audit watch: nothing new in {run} (poll {polls})")
        complete = list(discovered.complete)
        for ck, fp in todo:
            # the run signals at this step (docs/SIGNALS.md) join the checkpoint's findings:
            # watch has no run verdict, and a signal is what should stop the training run
            context = _context(complete, ck, cache, kwargs)
            res = _runs.apply_baseline((*context[:1], audit_one(ck, **kwargs)), baseline,
                                       policy)[-1]
            cache[ck.path] = res
            res = replace(res, extra=res.extra + signals_at(context, res, policy.signals))
            session.append(res)
            if fmt is TableOrJson.JSON:
                doc = {"schema": "ckpt-audit.watch/1", "run": run, "path": ck.path,
                       "step": ck.step, "verdict": res.verdict, "error": res.error,
                       "report": report_to_dict(res.report) if res.report else None,
                       "extra_findings": [finding_to_dict(f) for f in res.extra]}
                sys.stdout.write(json.dumps(doc) + "\n")
            else:
                sys.stdout.write(_line(res))
            sys.stdout.flush()
            st.record(ck, fp, res.verdict)
            save(state_path, st)
            _runs.result_ci_outputs(res, github)
            if junit_path:
                emit(render_suites(run_suites(session), threshold or Severity.FAIL), junit_path)
            if threshold is not None and _runs.result_gates(res, threshold, "ignore"):
                sys.stdout.write(f"stopping: {ck.name} reached --exit-on {exit_on.value}\n")
                return 1
        if max_polls is not None and polls >= max_polls:
            return 0
        time.sleep(interval)


def register(app: typer.Typer) -> None:
    @app.command("watch")
    def watch(
        run: Annotated[str, typer.Argument(help="Run folder to watch.")],
        interval: Annotated[float, typer.Option("--interval", min=0.0,
                                                help="Seconds between polls.")] = 60.0,
        max_polls: Annotated[int | None, typer.Option(
            "--max-polls", min=1, help="Stop after N polls (default: forever).")] = None,
        once: Annotated[bool, flag("--once", help="Poll once (= --max-polls 1).")] = False,
        exit_on: Annotated[ExitOn, typer.Option(
            "--exit-on", help="Exit 1 when a checkpoint reaches this verdict.")] = ExitOn.NEVER,
        state: Annotated[str | None, typer.Option(
            "--state", help="State file (default: under the user cache folder; never inside "
                            "the run).")] = None,
        config: ConfigOpt = None,
        fmt: Annotated[TableOrJson, typer.Option(
            "--format", "-f", help="One line per checkpoint, or JSON lines.")] = TableOrJson.TABLE,
        baseline: BaselineOpt = None,
        settle: SettleOpt = 2.0,
        junit_path: Annotated[str | None, typer.Option(
            "--junit", help="Keep a JUnit XML of this session's checkpoints in FILE.")] = None,
        github: GithubOpt = None,
        format_hint: FormatHintOpt = None,
        d_model: DModelOpt = None,
        convention: ConventionOpt = None,
    ) -> None:
        """Poll a run for new complete checkpoints and audit each exactly once."""
        raise typer.Exit(run_watch(run, interval=interval, max_polls=1 if once else max_polls,
                                   exit_on=exit_on, state=state, config=config, fmt=fmt,
                                   baseline=baseline, settle=settle, junit_path=junit_path,
                                   github=github,
                                   read=ReadOptions.of(format_hint, d_model, convention)))
