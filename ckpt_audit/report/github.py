"""GitHub Actions outputs: workflow-command annotations and the Markdown step summary.

Pure (strings in, strings out) except :func:`append_step_summary`, which appends to the file
named by ``$GITHUB_STEP_SUMMARY``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from ckpt_audit.records import Finding, Severity


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


_LEVEL = {Severity.FAIL: "error", Severity.WARN: "warning", Severity.INFO: "notice"}


def annotations_for(checkpoint: str, verdict: str, findings: Sequence[Finding],
                    problems: Sequence[str] = ()) -> list[str]:
    """Annotations for one checkpoint: one per info/warn/fail finding, one for an incomplete one."""
    lines = []
    if verdict == "incomplete":
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


def result_annotations(res: object) -> list[str]:
    """Annotations for one run checkpoint (a :class:`~ckpt_audit.runs.audit.CheckpointResult`):
    its findings, an incomplete one, an audit error."""
    ck = res.checkpoint  # type: ignore[attr-defined]
    lines = annotations_for(ck.path, res.verdict, res.findings,  # type: ignore[attr-defined]
                            ck.problems)
    if res.error:  # type: ignore[attr-defined]
        lines.append(annotation("error", res.error, file=ck.path,  # type: ignore[attr-defined]
                                title="ckpt-audit error"))
    return lines


def document_annotations(doc: object) -> list[str]:
    """Every annotation of a document (audit, trend, compare, diff): one per finding above ok,
    on the checkpoint (or run) it is about."""
    from ckpt_audit.report import kind_of

    kind = kind_of(doc)
    d: Any = doc
    if kind == "audit":
        return annotations_for(d.report.checkpoint, d.verdict, d.findings)
    if kind == "diff":
        return (annotations_for(d.b.checkpoint, d.verdict, d.findings)
                + annotations_for(d.a.checkpoint, d.a.verdict, d.a.findings)
                + annotations_for(d.b.checkpoint, d.b.verdict, d.b.findings))
    if kind == "trend":
        return ([line for r in d.results for line in result_annotations(r)]
                + annotations_for(d.run, d.verdict, d.findings))
    lines = [line for _, results in d.runs for r in results for line in result_annotations(r)]
    return lines + annotations_for(d.runs[-1][0], d.verdict, d.findings)
