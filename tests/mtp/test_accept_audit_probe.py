"""``audit --probe``: the acceptance summary inside the audit report."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.support.accept import accept_json as accept_run


def test_audit_json_gains_acceptance(cli: Any, fixture_ckpt: Path, probe_file: Path,
                                     loaded: Any, tmp_path: Path) -> None:
    out = tmp_path / "audit.json"
    r = cli(["audit", str(fixture_ckpt), "--probe", str(probe_file), "-f", "json",
             "-o", str(out)])
    assert r.code in (0, 1), r.err
    rep = json.loads(out.read_text())
    assert rep["schema"] == "ckpt-audit.audit/1"
    from ckpt_audit.report.schemas import validate

    validate(rep)  # acceptance figures included
    acc = rep["acceptance"]
    ref = accept_run(str(fixture_ckpt), str(probe_file), loaded=loaded)
    assert acc["schema"] == "ckpt-audit.accept/1" and acc["layout"] == "deepseek-hf"
    assert acc["depths"][0]["pairs"] == ref["depths"][0]["pairs"]
    assert acc["depths"][0]["greedy_acceptance"] == pytest.approx(
        ref["depths"][0]["greedy_acceptance"])
    md = cli(["audit", str(fixture_ckpt), "--probe", str(probe_file), "-f", "markdown"])
    assert "## MTP acceptance (deepseek-hf" in md.out
