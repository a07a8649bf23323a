"""Every finding code reaches every format: table, Markdown, JSON, JUnit, GitHub annotations
and step summary, for audit, trend, compare, diff and watch.

The codes are collected from the package source (every ``Finding(SEVERITY, "code", ...)``) plus
the band statuses, so a code added anywhere is covered without editing this test.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from ckpt_audit.records import (
    AuditReport,
    Convention,
    Finding,
    GainStats,
    NormRecord,
    Role,
    Severity,
    Status,
)
from ckpt_audit.report import FORMATS, AuditDocument, RenderOptions, render
from ckpt_audit.report.github import annotations_for, document_annotations
from ckpt_audit.report.json_report import report_to_dict
from ckpt_audit.runs.audit import CheckpointResult
from ckpt_audit.runs.compare import Comparison, Diff, diff_reports
from ckpt_audit.runs.discovery import RunCheckpoint
from ckpt_audit.runs.trend import build_trend

PACKAGE = Path(__file__).resolve().parents[2] / "ckpt_audit"
_CODE = re.compile(r'Finding\(\s*(?:Severity\.\w+|[\w.]+(?: if [^,]+ else [\w.]+)?),\s*'
                   r'"([a-z0-9][a-z0-9-]*)"')
GAIN = "model.layers.3.post_attention_layernorm.weight"


def finding_codes() -> list[str]:
    codes = {s.value for s in Status}
    for path in PACKAGE.rglob("*.py"):
        codes.update(_CODE.findall(path.read_text(encoding="utf-8")))
    return sorted(codes)


def test_the_scan_finds_the_codes_we_know():
    codes = finding_codes()
    for known in ("baseline-drift", "baseline-missing", "mtp-incomplete", "not-a-gain",
                  "trend-jump", "tp-mismatch", "init-mismatch", "collapse", "run-diverged"):
        assert known in codes


def _report(ck: str, findings: tuple[Finding, ...], ratio: float = 1.0) -> AuditReport:
    stats = GainStats(dim=64, norm=8.0 * ratio, ratio=ratio, min=ratio, max=ratio, mean=ratio,
                      std=0.0, nonfinite=0, near_zero=0.0, extreme=())
    recs = (NormRecord(GAIN, Role.LAYER, 3, "F32", Convention.DIRECT, stats, Status.NOMINAL,
                       Severity.OK),
            NormRecord("model.norm.weight", Role.FINAL, None, "F32", Convention.DIRECT, stats,
                       Status.NOMINAL, Severity.OK))
    return AuditReport(ck, "safetensors", 64, "config.json", Convention.DIRECT, recs, findings,
                       "default")


def _result(step: int, findings: tuple[Finding, ...]) -> CheckpointResult:
    ck = RunCheckpoint(f"/runs/a/checkpoint-{step}", f"checkpoint-{step}", step, "hf", True)
    return CheckpointResult(ck, _report(ck.path, ()), None, findings)


def _documents(f: Finding) -> dict[str, object]:
    results = (_result(0, ()), _result(100, (f,)))
    return {
        "audit": AuditDocument(_report("/ck", (f,))),
        "trend": build_trend("/runs/a", results),
        "compare": Comparison((("/runs/a", results), ("/runs/b", results)), (None,), 0.05),
        "diff": Diff(_report("/a", (f,)), _report("/b", ()),
                     tuple(diff_reports(_report("/a", ()), _report("/b", ())))),
    }


@pytest.mark.parametrize("code", finding_codes())
@pytest.mark.parametrize("tensor", [GAIN, None])
def test_every_code_in_every_format(code: str, tensor: str | None):
    message = f"because of {code} #42"
    f = Finding(Severity.WARN, code, tensor, message)
    for kind, doc in _documents(f).items():
        for fmt in FORMATS:
            text = render(doc, fmt, RenderOptions(width=250))
            if fmt == "json":
                text = json.dumps(json.loads(text))  # parses
            assert code in text, (kind, fmt)
            assert message in text, (kind, fmt, text)
        lines = "\n".join(document_annotations(doc))  # GitHub annotations; the step summary
        assert f"title=ckpt-audit {code}::" in lines and message in lines, kind  # is Markdown


@pytest.mark.parametrize("severity", [Severity.INFO, Severity.WARN, Severity.FAIL])
def test_every_severity_is_annotated_and_in_watch_json(severity: Severity):
    f = Finding(severity, "baseline-drift", GAIN, "moved 12%")
    assert annotations_for("/ck", "warn", (f,))
    assert report_to_dict(_report("/ck", (f,)))["findings"][0]["message"] == "moved 12%"


def test_watch_line_lists_every_finding():
    from ckpt_audit.commands.watch import _line

    f = Finding(Severity.INFO, "zero3-partitions", None, "values from 4 partitions")
    assert "zero3-partitions" in _line(_result(0, (f,))) and "4 partitions" in _line(
        _result(0, (f,)))
