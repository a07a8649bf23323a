"""Gate outputs: GitHub workflow-command escaping, baseline parsing, JUnit for runs, watch gate."""

from __future__ import annotations

import json
import os
import xml.etree.ElementTree as ET

import pytest

from ckpt_audit.errors import FormatError
from ckpt_audit.records import Finding, Severity
from ckpt_audit.report.github import annotation, append_step_summary, in_github_actions
from ckpt_audit.report.junit import render_suites, run_suites
from ckpt_audit.runs.gate import parse_baseline
from tests.support.cli import run_cli
from tests.support.runs import norm_ratio


def test_annotation_escaping_follows_github_spec():
    line = annotation("error", "50% down\nnext: line", file="/r/a,b:c", title="t:1,2")
    assert line == "::error file=/r/a%2Cb%3Ac,title=t%3A1%2C2::50%25 down%0Anext: line"
    assert annotation("warning", "m") == "::warning::m"


def test_step_summary_and_env(tmp_path):
    assert in_github_actions({"GITHUB_ACTIONS": "true"})
    assert not in_github_actions({"GITHUB_ACTIONS": "false"})
    assert not append_step_summary("x", {})
    target = tmp_path / "s.md"
    assert append_step_summary("# one", {"GITHUB_STEP_SUMMARY": str(target)})
    assert append_step_summary("# two", {"GITHUB_STEP_SUMMARY": str(target)})
    assert target.read_text() == "# one\n\n# two\n\n"


def test_parse_baseline_rejects_other_documents():
    with pytest.raises(FormatError, match="ckpt-audit.audit/1"):
        parse_baseline({"schema": "ckpt-audit.compare/1"}, "b.json")
    with pytest.raises(FormatError, match="no audited checkpoint"):
        parse_baseline({"schema": "ckpt-audit.trend/1"}, "b.json")
    with pytest.raises(FormatError, match="lacks step/gains"):
        parse_baseline({"schema": "ckpt-audit.trend/1", "checkpoints": [{"step": "x"}]}, "b.json")
    with pytest.raises(FormatError, match="lacks name/role/ratio"):
        parse_baseline({"schema": "ckpt-audit.audit/1", "norms": [{"name": "x"}]}, "b.json")
    base = parse_baseline({"schema": "ckpt-audit.audit/1", "checkpoint": "c", "norms": [
        {"name": "a", "role": "final", "ratio": 0.9},
        {"name": "b", "role": "layer", "ratio": None}]}, "b.json")
    assert list(base.gains) == ["a"]


def _result(step, complete=True, findings=(), error=None, audited=True):
    from ckpt_audit.records import AuditReport, Convention
    from ckpt_audit.runs.audit import CheckpointResult
    from ckpt_audit.runs.discovery import RunCheckpoint

    ck = RunCheckpoint(path=f"/r/c{step}", name=f"c{step}", step=step, layout="hf",
                       complete=complete, problems=() if complete else ("no files",))
    rep = AuditReport(ck.path, "safetensors", 8, "config", Convention.DIRECT, (), tuple(findings),
                      "default") if audited and complete else None
    return CheckpointResult(ck, rep, error)


def test_junit_runs_counts():
    fail = Finding(Severity.FAIL, "collapse", "model.norm.weight", "low")
    warn = Finding(Severity.WARN, "low", "model.norm.weight", "lowish")
    results = [_result(0), _result(1, findings=(fail,)), _result(2, findings=(warn,)),
               _result(3, complete=False), _result(4, error="bad header", audited=False)]
    root = ET.fromstring(render_suites(run_suites(results)).split("?>", 1)[1])
    assert (root.get("tests"), root.get("failures"), root.get("errors"),
            root.get("skipped")) == ("5", "1", "1", "1")
    assert len(root.findall("testsuite")) == 5
    strict = ET.fromstring(render_suites(run_suites([results[2]]),
                                         Severity.WARN).split("?>", 1)[1])
    assert strict.get("failures") == "1"


def test_watch_baseline_gate_and_annotations(llama_run, tmp_path, monkeypatch):
    base = tmp_path / "base.json"
    run_cli(["audit", os.path.join(llama_run, "checkpoint-0"), "-f", "json", "-o", str(base)])
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)
    res = run_cli(["watch", llama_run, "--once", "--settle", "0", "--state",
                   str(tmp_path / "s.json"), "--baseline", str(base), "--exit-on", "fail"])
    # checkpoint-100 moved less than 10 % from step 0 only if its ratio is within 10 %
    r100 = norm_ratio(os.path.join(llama_run, "checkpoint-100"))
    r200 = norm_ratio(os.path.join(llama_run, "checkpoint-200"))
    assert abs(r100 - 1) < 0.10 < abs(r200 - 1)
    assert res.code == 1
    assert "stopping: checkpoint-200" in res.out
    assert "::error file=" + os.path.join(llama_run, "checkpoint-200") in res.out
    assert "title=ckpt-audit baseline-drift::model.norm.weight" in res.out
    saved = json.loads((tmp_path / "s.json").read_text())
    assert sorted(v["verdict"] for v in saved["audited"].values()) == ["fail", "pass", "pass"]


def test_with_baseline_for_the_audit_command(llama_run, tmp_path):
    from ckpt_audit.core.audit import audit_checkpoint
    from ckpt_audit.core.policy import load_policy
    from ckpt_audit.runs.gate import with_baseline

    base = tmp_path / "base.json"
    run_cli(["audit", os.path.join(llama_run, "checkpoint-100"), "-f", "json", "-o", str(base)])
    policy = load_policy(None)
    same = audit_checkpoint(os.path.join(llama_run, "checkpoint-100"), policy=policy)
    assert with_baseline(same, str(base), policy).verdict == "pass"
    moved = audit_checkpoint(os.path.join(llama_run, "checkpoint-200"), policy=policy)
    assert moved.verdict == "pass"
    gated = with_baseline(moved, str(base), policy)
    assert gated.verdict == "fail"
    assert [f.code for f in gated.findings if f.severity is Severity.FAIL] == ["baseline-drift"]
