"""CI gate outputs: baseline drift, GitHub Actions annotations and step summary, JUnit for runs.

All functions are pure (they return strings or findings) except :func:`append_step_summary`, which
appends to the file named by ``$GITHUB_STEP_SUMMARY``.

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

import math
import os
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ckpt_audit.errors import FormatError, PolicyError
from ckpt_audit.records import AuditReport, Finding, Severity, Verdict
from ckpt_audit.storage.base import loads_json
from ckpt_audit.storage.local import read_local

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


# ------------------------------------------------------------------------------ GitHub Actions


def in_github_actions(env: Mapping[str, str] | None = None) -> bool:
    """True when running as a GitHub Actions step (``GITHUB_ACTIONS=true``)."""
    return (os.environ if env is None else env).get("GITHUB_ACTIONS") == "true"


def _escape_data(s: str) -> str:
    return s.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _escape_prop(s: str) -> str:
    return _escape_data(s).replace(":", "%3A").replace(",", "%2C")


def annotation(level: str, message: str, *, file: str | None = None,
               title: str | None = None) -> str:
    """A workflow command: ``::error file=F,title=T::message`` (escaped per GitHub's spec)."""
    props = []
    if file:
        props.append(f"file={_escape_prop(file)}")
    if title:
        props.append(f"title={_escape_prop(title)}")
    head = f"::{level}" + (" " + ",".join(props) if props else "")
    return f"{head}::{_escape_data(message)}"


_LEVEL = {Severity.FAIL: "error", Severity.WARN: "warning"}


def annotations_for(checkpoint: str, verdict: str, findings: Sequence[Finding],
                    problems: Sequence[str] = ()) -> list[str]:
    """Annotations for one checkpoint: one per warn/fail finding, one for an incomplete one."""
    lines = []
    if verdict == Verdict.INCOMPLETE:
        lines.append(annotation("warning", "incomplete checkpoint: " + "; ".join(problems),
                                file=checkpoint, title="ckpt-audit incomplete"))
    for f in findings:
        level = _LEVEL.get(f.severity)
        if level:
            what = f"{f.tensor}: {f.message}" if f.tensor else f.message
            lines.append(annotation(level, what, file=checkpoint, title=f"ckpt-audit {f.code}"))
    return lines


def append_step_summary(markdown: str, env: Mapping[str, str] | None = None) -> bool:
    """Append ``markdown`` to ``$GITHUB_STEP_SUMMARY``; ``False`` when the variable is unset."""
    target = (os.environ if env is None else env).get("GITHUB_STEP_SUMMARY")
    if not target:
        return False
    with open(target, "a", encoding="utf-8") as fh:
        fh.write(markdown.rstrip("\n") + "\n\n")
    return True


# ------------------------------------------------------------------------------------- JUnit


def junit_runs(suite: str, rows: Sequence[tuple[str, int, str, Sequence[Finding], Sequence[str],
                                                  str | None]],
               fail_on: str = "fail") -> str:
    """JUnit XML with one test case per checkpoint.

    ``rows`` are ``(checkpoint path, step, verdict, findings, problems, error)``. A verdict at or
    above ``fail_on`` (``fail`` or ``warn``) is a ``<failure>``, ``error`` an ``<error>`` and an
    incomplete checkpoint ``<skipped>`` (not passing, not failing the build).
    """
    root = ET.Element("testsuites", name="ckpt-audit")
    ts = ET.SubElement(root, "testsuite", name=suite)
    counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    for path, step, verdict, findings, problems, error in rows:
        counts["tests"] += 1
        tc = ET.SubElement(ts, "testcase", classname=suite, name=f"step {step}: {path}")
        bad = [f for f in findings if f.severity.rank >= Severity.WARN.rank]
        text = "\n".join(f"[{f.severity.value}] {f.code} {f.tensor or ''}: {f.message}"
                         for f in bad)
        if verdict == Verdict.INCOMPLETE:
            counts["skipped"] += 1
            ET.SubElement(tc, "skipped", message="incomplete: " + "; ".join(problems))
        elif verdict == Verdict.ERROR:
            counts["errors"] += 1
            ET.SubElement(tc, "error", message=error or "audit error")
        elif Verdict(verdict).rank >= Verdict(fail_on).rank:
            counts["failures"] += 1
            el = ET.SubElement(tc, "failure", message=f"verdict {verdict}")
            el.text = text
        elif text:
            ET.SubElement(tc, "system-out").text = text
    for k, v in counts.items():
        ts.set(k, str(v))
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"
