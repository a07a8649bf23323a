"""Helpers shared by the run commands (trend, compare, diff, watch): baseline, gate, CI outputs."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from ckpt_audit.records import Finding, Severity

if TYPE_CHECKING:
    from ckpt_audit.runs.audit import CheckpointResult


def apply_baseline(results: Sequence[CheckpointResult], baseline_path: str | None,
                   policy: Any) -> tuple[CheckpointResult, ...]:
    """Add ``baseline-drift``/``baseline-missing`` findings to every audited checkpoint, like
    with like (:func:`ckpt_audit.runs.gate.run_baseline_findings`); ``results`` start with the
    run's first audited checkpoint (it decides whether the run is from scratch)."""
    if not baseline_path:
        return tuple(results)
    from ckpt_audit.core.signals import choose_start
    from ckpt_audit.runs.gate import (
        load_baseline,
        policy_baseline_roles,
        policy_max_drift,
        run_baseline_findings,
    )
    from ckpt_audit.runs.trend import snapshot_of

    base = load_baseline(baseline_path)
    audited = [snapshot_of(r) for r in results if r.report is not None]
    start, _why = choose_start(audited[:1], policy.signals)
    found = run_baseline_findings([r.report for r in results],
                                  [r.checkpoint.step for r in results], base,
                                  max_drift=policy_max_drift(policy),
                                  roles=policy_baseline_roles(policy),
                                  from_start=start is not None or
                                  (bool(audited) and audited[0].step == 0))
    return tuple(replace(r, extra=r.extra + f) for r, f in zip(results, found, strict=True))


def result_gates(res: CheckpointResult, fail_on: Severity, incomplete: str) -> bool:
    """Whether one checkpoint makes the command exit 1."""
    if not res.checkpoint.complete:
        return incomplete == "fail" or (incomplete == "warn" and fail_on.rank <= Severity.WARN.rank)
    if res.error is not None or res.report is None:
        return True
    return any(f.severity.rank >= fail_on.rank for f in res.findings)


def exit_code(results: Sequence[CheckpointResult], fail_on: Severity, incomplete: str,
              run_findings: Sequence[Finding] = ()) -> int:
    """1 when any checkpoint gates (see :func:`result_gates`) or a finding of the run is at or
    above ``fail_on``, else 0."""
    return 1 if (any(result_gates(r, fail_on, incomplete) for r in results)
                 or any(f.severity.rank >= fail_on.rank for f in run_findings)) else 0


def result_ci_outputs(res: CheckpointResult, github: bool | None) -> None:
    """``watch``: the annotations of one newly audited checkpoint, under GitHub Actions."""
    from ckpt_audit.report.github import in_github_actions, result_annotations

    if github if github is not None else in_github_actions():
        for line in result_annotations(res):
            sys.stdout.write(line + "\n")


def band_list(policy: Any, role: str = "final") -> list[tuple[str, float | None, float | None]]:
    """The policy's ladder for ``role`` as ``(status, lo, hi)`` ratios, for plot shading."""
    from ckpt_audit.records import Role

    ranges = policy.bands_for(Role(role)).ranges()
    return [(status.value, lo, hi) for status, (lo, hi) in ranges.items()]


def parse_size(value: str) -> tuple[int, int]:
    """``--plot-size WIDTHxHEIGHT`` in pixels."""
    from ckpt_audit.errors import CkptAuditError

    try:
        w, h = (int(x) for x in value.lower().split("x"))
    except ValueError:
        raise CkptAuditError(f"--plot-size must look like 1000x600, not {value!r}") from None
    if not (50 <= w <= 10000 and 50 <= h <= 10000):
        raise CkptAuditError("--plot-size: each side must be 50–10000 pixels")
    return w, h


def check_all(*checks: Callable[[], Any]) -> list[Any]:
    """Run every input check and report all their errors together, in one line."""
    from ckpt_audit.errors import CkptAuditError

    values, errors = [], []
    for check in checks:
        try:
            values.append(check())
        except CkptAuditError as exc:
            values.append(None)
            errors.append(str(exc))
    if errors:
        raise CkptAuditError("; ".join(errors))
    return values


def parse_roles(roles: str) -> tuple[str, ...]:
    """``--roles final,mtp``: role names (or ``all``), each checked."""
    from ckpt_audit.errors import CkptAuditError
    from ckpt_audit.records import Role

    names = tuple(r.strip() for r in roles.split(",") if r.strip())
    valid = [r.value for r in Role] + ["all"]
    bad = [r for r in names if r not in valid]
    if bad or not names:
        raise CkptAuditError(f"--roles: unknown role {', '.join(map(repr, bad)) or '(none)'}; "
                             f"choose from {', '.join(valid)}")
    return names


def parse_regex(option: str, pattern: str | None) -> str | None:
    """A regular expression option, compiled once to report a bad one as an input error."""
    import re

    from ckpt_audit.errors import CkptAuditError

    if pattern is not None:
        try:
            re.compile(pattern)
        except re.error as exc:
            raise CkptAuditError(f"{option}: not a valid regular expression ({exc}): "
                                 f"{pattern!r}") from None
    return pattern


def require_match(asked: str, matched: Sequence[str], results: Sequence[CheckpointResult],
                  by_role: bool) -> None:
    """A filter that matches no gain of any audited checkpoint is an input error naming what
    exists (never an empty table or an empty plot)."""
    from ckpt_audit.errors import CkptAuditError

    present = {n: r.role.value for res in results for n, r in res.gains().items()}
    if matched or not present:
        return
    if by_role:
        have = sorted(set(present.values()))
        raise CkptAuditError(f"{asked} matches no gain; the roles present are {', '.join(have)}")
    names = sorted(present)
    shown = ", ".join(names[:8]) + (f", … ({len(names)} gains)" if len(names) > 8 else "")
    raise CkptAuditError(f"{asked} matches no gain; gains present: {shown}")
