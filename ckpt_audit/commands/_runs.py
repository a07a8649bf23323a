"""Helpers shared by the run commands (trend, compare, diff, watch): options, gate, CI outputs."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from ckpt_audit.commands._common import emit, refuse_inside
from ckpt_audit.errors import CkptAuditError
from ckpt_audit.records import Convention, Severity
from ckpt_audit.runs.audit import CheckpointResult

INCOMPLETE_CHOICES = ("ignore", "warn", "fail")


def parse_convention(value: str | None) -> Convention | None:
    if value is None:
        return None
    try:
        return Convention(value)
    except ValueError:
        raise CkptAuditError("--convention must be direct, offset or none") from None


def check_choice(option: str, value: str, choices: Sequence[str]) -> str:
    if value not in choices:
        raise CkptAuditError(f"{option} must be one of {', '.join(choices)}, not {value!r}")
    return value


def audit_kwargs(policy: Any, format_hint: str | None, d_model: int | None,
                 convention: str | None) -> dict[str, Any]:
    return {"policy": policy, "format_hint": format_hint, "d_model": d_model,
            "convention": parse_convention(convention)}


def apply_baseline(results: Sequence[CheckpointResult], baseline_path: str | None,
                   policy: Any) -> tuple[CheckpointResult, ...]:
    """Add ``baseline-drift``/``baseline-missing`` findings to every audited checkpoint."""
    if not baseline_path:
        return tuple(results)
    from ckpt_audit.runs.gate import (
        baseline_findings,
        load_baseline,
        policy_baseline_roles,
        policy_max_drift,
    )

    base = load_baseline(baseline_path)
    drift, roles = policy_max_drift(policy), policy_baseline_roles(policy)
    return tuple(replace(r, extra=r.extra + baseline_findings(r.report, base, max_drift=drift,
                                                              roles=roles))
                 if r.report is not None else r for r in results)


def result_gates(res: CheckpointResult, fail_on: Severity, incomplete: str) -> bool:
    """Whether one checkpoint makes the command exit 1."""
    if not res.checkpoint.complete:
        return incomplete == "fail" or (incomplete == "warn" and fail_on.rank <= Severity.WARN.rank)
    if res.error is not None or res.report is None:
        return True
    return any(f.severity.rank >= fail_on.rank for f in res.findings)


def exit_code(results: Sequence[CheckpointResult], fail_on: Severity, incomplete: str) -> int:
    """1 when any checkpoint gates (see :func:`result_gates`), else 0."""
    return 1 if any(result_gates(r, fail_on, incomplete) for r in results) else 0


def ci_outputs(results: Sequence[CheckpointResult], markdown: str | None,
               github: bool | None) -> None:
    """Under GitHub Actions (or ``--github``): annotations on stdout, Markdown step summary."""
    from ckpt_audit.runs.gate import annotations_for, append_step_summary, in_github_actions

    if github is None:
        github = in_github_actions()
    if not github:
        return
    for res in results:
        for line in annotations_for(res.checkpoint.path, res.verdict, res.findings,
                                    res.checkpoint.problems):
            sys.stdout.write(line + "\n")
        if res.error:
            sys.stdout.write(f"::error file={res.checkpoint.path}::{res.error}\n")
    if markdown:
        import os

        summary = os.environ.get("GITHUB_STEP_SUMMARY")
        if summary:  # a step summary is a write like any other: never inside a checkpoint
            paths = [r.checkpoint.path for r in results]
            refuse_inside_any(summary, paths + [os.path.dirname(p) for p in paths])
        append_step_summary(markdown)


def junit(suite: str, results: Sequence[CheckpointResult], fail_on: Severity) -> str:
    from ckpt_audit.runs.gate import junit_runs

    level = "warn" if fail_on.rank <= Severity.WARN.rank else "fail"
    return junit_runs(suite, [(r.checkpoint.path, r.checkpoint.step, r.verdict, r.findings,
                               r.checkpoint.problems, r.error) for r in results], level)


def refuse_inside_any(output: str | None, folders: Sequence[str]) -> None:
    """Never write a report or plot inside a run or checkpoint folder."""
    if output:
        for folder in folders:
            refuse_inside(output, folder)


def write(text: str, output: str | None) -> None:
    """Write ``text`` to ``output`` (already checked by :func:`refuse_inside_any`) or stdout."""
    emit(text, output, [])


def band_list(policy: Any, role: str = "final") -> list[tuple[str, float | None, float | None]]:
    """The policy's ladder for ``role`` as ``(status, lo, hi)`` ratios, for plot shading."""
    from ckpt_audit.records import Role

    ranges = policy.bands_for(Role(role)).ranges()
    return [(status.value, lo, hi) for status, (lo, hi) in ranges.items()]
