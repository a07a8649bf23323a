"""``ckpt-audit report`` in a real browser: Debian's chromium driven by Playwright.

The page must load from disk with no console error and no network request, and its charts must
carry the run's numbers (checked against ratios computed independently with safetensors and
numpy). A screenshot is kept under $CKPT_AUDIT_ARTIFACTS (default ./test-artifacts/).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.support.cli import run_cli
from tests.support.paths import require_data
from tests.support.runs import all_ratios, norm_ratio

CHROMIUM = os.environ.get("CKPT_AUDIT_CHROMIUM", "/usr/bin/chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--no-first-run"]
ARTIFACTS = Path(os.environ.get("CKPT_AUDIT_ARTIFACTS",
                                Path(__file__).resolve().parents[2] / "test-artifacts"))


def _browser_or_skip():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        require_data("playwright is not installed (pip install -r requirements-test.txt)")
    if not shutil.which(CHROMIUM) and not os.path.exists(CHROMIUM):
        require_data(f"no chromium at {CHROMIUM} (apt-get install -y chromium)")
    return sync_playwright


def test_report_in_a_browser(llama_run_master, llama_run_b, tmp_path):
    sync_playwright = _browser_or_skip()
    out = tmp_path / "report.html"
    res = run_cli(["report", llama_run_master, llama_run_b, "-o", str(out)])
    assert res.code == 1, res.err  # the run collapses at step 300
    assert f"HTML report written to {out}" in res.err
    text = out.read_text()
    assert "http://" not in text and "https://" not in text and "<script" not in text

    errors, requests = [], []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("request", lambda r: requests.append(r.url))
            page.goto(out.as_uri())
            page.wait_for_load_state("load")
            # final ratio per checkpoint, from the chart, against an independent computation
            pts = page.eval_on_selector_all(
                "svg#ratios-0 circle.pt[data-series='model.norm.weight']",
                "els => els.map(e => [Number(e.dataset.step), Number(e.dataset.ratio)])")
            assert len(pts) == 5
            for step, ratio in pts:
                want = norm_ratio(os.path.join(llama_run_master, f"checkpoint-{step}"))
                assert ratio == pytest.approx(want, rel=1e-5)
            assert page.get_attribute("svg#ratios-0 .oob-mark", "data-step") == "300"
            assert page.locator("svg#ratios-0 rect.band").count() >= 4
            # heatmap: every gain × every checkpoint, with the right numbers
            cells = page.eval_on_selector_all(
                "svg#heatmap-0 rect.cell", "els => els.map(e => [e.dataset.gain, "
                "Number(e.dataset.step), Number(e.dataset.ratio)])")
            ratios300 = all_ratios(os.path.join(llama_run_master, "checkpoint-300"))
            assert len(cells) == 5 * len(ratios300)
            for gain, step, ratio in cells:
                if step == 300:
                    assert ratio == pytest.approx(ratios300[gain], rel=1e-5), gain
            # verdicts and the first divergent layer
            verdicts = page.eval_on_selector_all(
                f"table.verdicts[data-run='{llama_run_master}'] tr.checkpoint",
                "els => els.map(e => [e.dataset.step, e.dataset.verdict])")
            assert dict(verdicts)["300"] == "fail" and dict(verdicts)["0"] == "pass"
            div = page.locator("tr.divergence")
            assert div.get_attribute("data-step") == "100"
            assert div.get_attribute("data-gain") == "model.layers.0.input_layernorm.weight"
            assert page.locator("li.finding[data-code='collapse']").count() >= 1
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "report.png"), full_page=True)
        finally:
            browser.close()
    assert errors == []
    assert requests == [out.as_uri()]
    assert (ARTIFACTS / "report.png").stat().st_size > 10_000
