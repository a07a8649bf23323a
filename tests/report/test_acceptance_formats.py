"""``audit --probe``: the acceptance figures reach every format (they were lost for JUnit when
the audit JSON was spliced after rendering)."""

from __future__ import annotations

import json

from ckpt_audit.records import AuditReport, Convention
from ckpt_audit.report import FORMATS, AuditDocument, RenderOptions, render

ACC = {"schema": "ckpt-audit.accept/1", "layout": "deepseek-hf", "positions": 321,
       "depths": [{"depth": 1, "pairs": 300, "greedy_acceptance": 0.6125,
                   "sampled_acceptance": {"1.0": 0.5431}, "cumulative_acceptance": 0.6125,
                   "label_accuracy": None, "verifier_entropy": 1.25, "draft_entropy": 1.5}],
       "expected_tokens_per_step": 1.6125, "notes": []}


def test_acceptance_in_every_format():
    rep = AuditReport("/ck", "safetensors", 64, "config", Convention.DIRECT, (), (), "default")
    doc = AuditDocument(rep, ACC)
    for fmt in FORMATS:
        text = render(doc, fmt, RenderOptions(width=160))
        assert "0.6125" in text, fmt
        assert "deepseek-hf" in text, fmt
    assert json.loads(render(doc, "json"))["acceptance"]["positions"] == 321
    assert 'name="mtp-acceptance"' in render(doc, "junit")
