"""The baseline gate: drift of a checkpoint's gains from a known-good audit report.

Pure functions returning findings; their renderings (GitHub annotations, JUnit) live in
:mod:`ckpt_audit.report`.

Baseline drift (docs/RUNS.md): for every gain of a role in ``roles`` present in the known-good
report, ``drift = |ratio / ratio_baseline − 1|``; a drift above ``max_drift`` is a
``baseline-drift`` finding of severity ``fail``, and a gain of the baseline missing from the new
checkpoint is a ``baseline-missing`` failure. Both knobs live in the policy TOML, in a table the
audit core ignores::

    [baseline]
    max_drift = 0.10            # allowed relative change of a gain's ratio
    roles = ["final", "mtp"]    # roles compared ("all" for every gain)

and default to :data:`DEFAULT_MAX_DRIFT` and :data:`DEFAULT_BASELINE_ROLES`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ckpt_audit.errors import FormatError, PolicyError
from ckpt_audit.records import AuditReport, Finding, Severity

#: Allowed relative change of a gain's ratio from the baseline (10 %), when the policy has none.
DEFAULT_MAX_DRIFT = 0.10
#: Roles compared against the baseline by default (the roles the article's bands are about).
DEFAULT_BASELINE_ROLES = ("final", "mtp")


@dataclass(frozen=True)
class BaselineGain:
    name: str
    role: str
    ratio: float


@dataclass(frozen=True)
class Baseline:
    """The gains of a known-good ``ckpt-audit.audit/1`` report."""

    source: str
    checkpoint: str
    gains: Mapping[str, BaselineGain]


def parse_baseline(data: Any, source: str) -> Baseline:
    """A :class:`Baseline` from a parsed audit report (:class:`FormatError` names ``source``)."""
    if not isinstance(data, dict) or data.get("schema") != "ckpt-audit.audit/1":
        raise FormatError("not a ckpt-audit audit report (expected \"schema\": "
                          "\"ckpt-audit.audit/1\"; write one with `ckpt-audit audit CKPT "
                          "--format json --output FILE`)", source)
    gains: dict[str, BaselineGain] = {}
    for item in data.get("norms") or []:
        try:
            name, role, ratio = str(item["name"]), str(item["role"]), item["ratio"]
        except (KeyError, TypeError):
            raise FormatError("a norms entry lacks name/role/ratio", source) from None
        if isinstance(ratio, (int, float)) and math.isfinite(ratio):
            gains[name] = BaselineGain(name, role, float(ratio))
    return Baseline(source, str(data.get("checkpoint", "")), gains)


def load_baseline(path: str) -> Baseline:
    """Read a known-good audit report written with ``--format json``."""
    try:
        with open(path, "rb") as fh:
            data = json.loads(fh.read())
    except OSError as exc:
        raise FormatError(f"cannot read baseline ({exc.strerror})", path) from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise FormatError(f"baseline is not valid JSON ({exc})", path) from None
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


def baseline_findings(report: AuditReport, baseline: Baseline, *, max_drift: float,
                      roles: Sequence[str] = DEFAULT_BASELINE_ROLES) -> tuple[Finding, ...]:
    """Failing findings for gains that moved more than ``max_drift`` from the baseline."""
    current = {r.name: r for r in report.norms}
    out: list[Finding] = []
    for name, base in baseline.gains.items():
        if "all" not in roles and base.role not in roles:
            continue
        rec = current.get(name)
        if rec is None:
            out.append(Finding(Severity.FAIL, "baseline-missing", name,
                               f"in the baseline ({baseline.source}) but not in this checkpoint"))
            continue
        ratio = rec.stats.ratio
        drift = abs(ratio / base.ratio - 1.0) if base.ratio else math.inf
        if not math.isfinite(ratio) or drift > max_drift:
            out.append(Finding(Severity.FAIL, "baseline-drift", name,
                               f"ratio {ratio:.4f} vs baseline {base.ratio:.4f}: moved "
                               f"{drift:.1%}, more than the {max_drift:.0%} allowed"))
    return tuple(out)


def with_baseline(report: AuditReport, baseline_path: str, policy: Any) -> AuditReport:
    """``report`` with the baseline findings added (for ``ckpt-audit audit --baseline FILE``)."""
    from dataclasses import replace

    found = baseline_findings(report, load_baseline(baseline_path),
                              max_drift=policy_max_drift(policy),
                              roles=policy_baseline_roles(policy))
    return replace(report, findings=report.findings + found)
