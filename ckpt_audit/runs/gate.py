"""The baseline gate: drift of a checkpoint's gains from a known-good audit report.

Pure functions returning findings; their renderings (GitHub annotations, JUnit) live in
:mod:`ckpt_audit.report`.

Baseline drift (docs/RUNS.md): for every gain of a role in ``roles`` present in the known-good
report, ``drift = |ratio / ratio_baseline − 1|``; a drift above ``max_drift`` is a
``baseline-drift`` finding of severity ``fail``, and a gain of the baseline missing from the new
checkpoint is a ``baseline-missing`` failure. On a run, like is compared with like
(:func:`run_baseline_findings`): a baseline *run* (``trend --format json``) is compared step by
step, at the steps both have; a baseline *checkpoint* (``audit --format json``) is the end point of
a healthy run, so a from-scratch run's checkpoint is within budget anywhere between the known
start (ratio 1) and the baseline's ratio, widened by ``max_drift`` on both sides. Both knobs live
in the policy TOML, in a table the audit core ignores::

    [baseline]
    max_drift = 0.10            # allowed relative change of a gain's ratio
    roles = ["final", "mtp"]    # roles compared ("all" for every gain)

and default to :data:`DEFAULT_MAX_DRIFT` and :data:`DEFAULT_BASELINE_ROLES`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import field
from typing import Any

from ckpt_audit.errors import FormatError, PolicyError
from ckpt_audit.records import AuditReport, Finding, Severity, frozen
from ckpt_audit.storage.base import loads_json
from ckpt_audit.storage.local import read_local

#: Allowed relative change of a gain's ratio from the baseline (10 %), when the policy has none.
DEFAULT_MAX_DRIFT = 0.10
#: Roles compared against the baseline by default (the roles the article's bands are about).
DEFAULT_BASELINE_ROLES = ("final", "mtp")


@frozen
class BaselineGain:
    """One gain of a baseline report: name, role and ‖γ_eff‖₂ / √n."""

    name: str
    role: str
    ratio: float


@frozen
class Baseline:
    """The gains of a known-good ``ckpt-audit.audit/1`` report (``steps`` empty), or of every
    checkpoint of a known-good run's ``ckpt-audit.trend/1`` report (``steps``: step → gains)."""

    source: str
    checkpoint: str
    gains: Mapping[str, BaselineGain]
    steps: Mapping[int, Mapping[str, BaselineGain]] = field(default_factory=dict)

    @property
    def is_run(self) -> bool:
        return bool(self.steps)


def _gains(items: Any, source: str) -> dict[str, BaselineGain]:
    gains: dict[str, BaselineGain] = {}
    for item in items:
        try:
            name, role, ratio = str(item["name"]), str(item["role"]), item["ratio"]
        except (KeyError, TypeError):
            raise FormatError("a gains entry lacks name/role/ratio", source) from None
        if isinstance(ratio, (int, float)) and not isinstance(ratio, bool) \
                and math.isfinite(ratio):
            gains[name] = BaselineGain(name, role, float(ratio))
    return gains


def parse_baseline(data: Any, source: str) -> Baseline:
    """A :class:`Baseline` from a parsed audit or trend report (errors name ``source``)."""
    schema = data.get("schema") if isinstance(data, dict) else None
    if schema == "ckpt-audit.trend/1":
        steps: dict[int, dict[str, BaselineGain]] = {}
        for c in data.get("checkpoints") or []:
            if not isinstance(c, dict) or not isinstance(c.get("gains"), dict) \
                    or not isinstance(c.get("step"), int):
                raise FormatError("a checkpoints entry lacks step/gains", source)
            if c["gains"]:
                steps[c["step"]] = _gains(({"name": k, **v} if isinstance(v, dict) else None
                                           for k, v in c["gains"].items()), source)
        if not steps:
            raise FormatError("the baseline run has no audited checkpoint", source)
        last = max(steps)
        return Baseline(source, str(data.get("run", "")), steps[last], steps)
    if schema != "ckpt-audit.audit/1":
        raise FormatError("not a ckpt-audit audit or trend report (expected \"schema\": "
                          "\"ckpt-audit.audit/1\" or \"ckpt-audit.trend/1\"; write one with "
                          "`ckpt-audit audit CKPT --format json --output FILE`)", source)
    return Baseline(source, str(data.get("checkpoint", "")),
                    _gains(data.get("norms") or [], source))


def load_baseline(path: str) -> Baseline:
    """Read a known-good audit report written with ``--format json``."""
    data = loads_json(read_local(path, 64 * 1024 * 1024, path), path, "baseline JSON")
    return parse_baseline(data, path)


def _baseline_table(policy: Any) -> dict[str, Any]:
    raw = getattr(policy, "raw", None) or {}
    table = raw.get("baseline") if isinstance(raw, dict) else None
    return table if isinstance(table, dict) else {}


def policy_max_drift(policy: Any) -> float:
    """``[baseline] max_drift`` of the policy (or a ``max_drift`` attribute), else the default."""
    value = _baseline_table(policy).get("max_drift", getattr(policy, "max_drift", None))
    if value is None:
        return DEFAULT_MAX_DRIFT
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise PolicyError(f"[baseline] max_drift must be a positive number, not {value!r}",
                          getattr(policy, "source", None))
    return float(value)


def policy_baseline_roles(policy: Any) -> tuple[str, ...]:
    """``[baseline] roles`` of the policy, else :data:`DEFAULT_BASELINE_ROLES`."""
    roles = _baseline_table(policy).get("roles")
    if roles is None:
        return DEFAULT_BASELINE_ROLES
    if not isinstance(roles, list) or not all(isinstance(r, str) for r in roles):
        raise PolicyError("[baseline] roles must be a list of role names",
                          getattr(policy, "source", None))
    return tuple(roles)


def baseline_findings(report: AuditReport, baseline: Baseline | Mapping[str, BaselineGain], *,
                      max_drift: float, roles: Sequence[str] = DEFAULT_BASELINE_ROLES,
                      from_start: bool = False, source: str | None = None,
                      what: str = "baseline") -> tuple[Finding, ...]:
    """Failing findings for gains that moved more than ``max_drift`` from the baseline.

    ``from_start``: the budget is the interval between the known start (1) and the baseline's
    ratio, widened by ``max_drift`` (relative) on both sides, instead of ±``max_drift`` around it.
    """
    gains = baseline.gains if isinstance(baseline, Baseline) else baseline
    src = source or (baseline.source if isinstance(baseline, Baseline) else "baseline")
    current = {r.name: r for r in report.norms}
    out: list[Finding] = []
    for name, base in gains.items():
        if "all" not in roles and base.role not in roles:
            continue
        rec = current.get(name)
        if rec is None:
            out.append(Finding(Severity.FAIL, "baseline-missing", name,
                               f"in the {what} ({src}) but not in this checkpoint"))
            continue
        ratio = rec.stats.ratio
        lo, hi = (min(1.0, base.ratio), max(1.0, base.ratio)) if from_start else \
            (base.ratio, base.ratio)
        lo, hi = lo * (1.0 - max_drift), hi * (1.0 + max_drift)
        if not math.isfinite(ratio) or not lo <= ratio <= hi:
            drift = abs(ratio / base.ratio - 1.0) if base.ratio else math.inf
            budget = (f"outside the budget [{lo:.4f}, {hi:.4f}] between the known start (1) and "
                      f"the {what}, ±{max_drift:.0%}" if from_start
                      else f"moved {drift:.1%}, more than the {max_drift:.0%} allowed")
            out.append(Finding(Severity.FAIL, "baseline-drift", name,
                               f"ratio {ratio:.4f} vs {what} {base.ratio:.4f}: {budget}"))
    return tuple(out)


def run_baseline_findings(reports: Sequence[AuditReport | None], steps: Sequence[int],
                          baseline: Baseline, *, max_drift: float,
                          roles: Sequence[str] = DEFAULT_BASELINE_ROLES,
                          from_start: bool) -> list[tuple[Finding, ...]]:
    """Like with like, for each checkpoint of a run (``None``: not audited, no findings).

    A baseline run: the baseline's checkpoint at the same step (none at that step: no
    comparison). A baseline checkpoint: the budget from the known start to it when the run is
    from scratch (``from_start``), else ±``max_drift`` around it.
    """
    out: list[tuple[Finding, ...]] = []
    for report, step in zip(reports, steps, strict=True):
        if report is None:
            out.append(())
        elif baseline.is_run:
            same = baseline.steps.get(step)
            out.append(baseline_findings(report, same, max_drift=max_drift, roles=roles,
                                         source=f"{baseline.source} step {step}",
                                         what="baseline run at the same step")
                       if same is not None else ())
        else:
            out.append(baseline_findings(report, baseline, max_drift=max_drift, roles=roles,
                                         from_start=from_start))
    return out


def with_baseline(report: AuditReport, baseline_path: str, policy: Any) -> AuditReport:
    """``report`` with the baseline findings added (for ``ckpt-audit audit --baseline FILE``)."""
    from dataclasses import replace

    baseline = load_baseline(baseline_path)
    if baseline.is_run:
        raise FormatError("a run's trend report is a baseline for `trend`/`watch` (step by "
                          "step); for one checkpoint give an audit report", baseline_path)
    found = baseline_findings(report, baseline, max_drift=policy_max_drift(policy),
                              roles=policy_baseline_roles(policy))
    return replace(report, findings=report.findings + found)
