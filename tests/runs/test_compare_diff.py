"""``compare`` and ``diff`` on runs written by save_pretrained, against independent ratios."""

from __future__ import annotations

import json
import os
import re

import pytest

from tests.support.cli import run_cli
from tests.support.runs import all_ratios

_LAYER = re.compile(r"\.layers\.(\d+)\.")


def _forward(name: str) -> tuple[int, int, str]:
    m = _LAYER.search(name)
    if m:
        return (1, int(m.group(1)), name)
    return (2, 0, name)  # the final norm comes after every layer


def test_compare_finds_first_divergent_layer(llama_run_master, llama_run_b, tmp_path):
    tol = 0.05
    res = run_cli(["compare", llama_run_master, llama_run_b, "-f", "json",
                   "--tolerance", str(tol)])
    assert res.code == 1, res.err
    doc = json.loads(res.out)
    assert doc["schema"] == "ckpt-audit.compare/1"
    assert doc["matching_steps"] == [0, 100, 200, 300, 400]
    # independent: walk steps, then gains in forward order, first |Δratio| > tol
    want = None
    for step in doc["matching_steps"]:
        a = all_ratios(os.path.join(llama_run_master, f"checkpoint-{step}"))
        b = all_ratios(os.path.join(llama_run_b, f"checkpoint-{step}"))
        for name in sorted(set(a) & set(b), key=_forward):
            if abs(b[name] - a[name]) > tol:
                want = (step, name, a[name], b[name])
                break
        if want:
            break
    assert want is not None
    d = doc["first_divergence"][0]
    assert (d["step"], d["name"]) == want[:2]
    assert d["layer"] == 0 and d["run"] == llama_run_b
    assert d["ratio_reference"] == pytest.approx(want[2], rel=1e-9)
    assert d["ratio_other"] == pytest.approx(want[3], rel=1e-9)
    # with a tolerance above every difference, nothing diverges
    assert run_cli(["compare", llama_run_master, llama_run_b, "--tolerance", "10"]).code == 0


def test_compare_table_and_overlay_plot(llama_run_master, llama_run_b, tmp_path):
    from PIL import Image

    png = str(tmp_path / "cmp.png")
    res = run_cli(["compare", llama_run_master, llama_run_b, "--width", "110", "--plot", png])
    assert res.code == 1
    assert "first diverges at step 100, model.layers.0.input_layernorm.weight" in res.out
    assert all(len(line) <= 110 for line in res.out.splitlines())
    with Image.open(png) as im:
        assert im.format == "PNG" and im.size == (1000, 600)
    same = run_cli(["compare", llama_run_master, llama_run_master])
    assert same.code == 0 and "within ±0.05" in same.out
    assert run_cli(["compare", llama_run_master]).code == 2


def test_diff_sorted_by_change(llama_run_master, tmp_path):
    a = os.path.join(llama_run_master, "checkpoint-0")
    b = os.path.join(llama_run_master, "checkpoint-300")
    res = run_cli(["diff", a, b, "-f", "json"])
    assert res.code == 0, res.err
    doc = json.loads(res.out)
    ra, rb = all_ratios(a), all_ratios(b)
    assert {g["name"] for g in doc["gains"]} == set(ra)
    for g in doc["gains"]:
        assert g["ratio_a"] == pytest.approx(ra[g["name"]], rel=1e-9)
        assert g["ratio_b"] == pytest.approx(rb[g["name"]], rel=1e-9)
        assert g["change"] == pytest.approx(rb[g["name"]] - ra[g["name"]], rel=1e-9, abs=1e-12)
    mags = [abs(g["change"]) for g in doc["gains"]]
    assert mags == sorted(mags, reverse=True)
    assert doc["gains"][0]["name"] == "model.norm.weight"
    assert doc["gains"][0]["status_b"] == "collapse"
    table = run_cli(["diff", a, b, "--width", "150", "--show", "2"])
    assert "and 3 more" in table.out and "nominal → collapse" in table.out
    assert run_cli(["diff", a, b, "--max-change", "0.5"]).code == 1
    assert run_cli(["diff", a, b, "--max-change", "0.9"]).code == 0
