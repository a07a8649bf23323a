"""``ckpt-audit trend`` over runs written by save_pretrained / safetensors, checked against an
independent computation (official safetensors reader + numpy)."""

from __future__ import annotations

import json
import os
import xml.etree.ElementTree as ET

import pytest

from ckpt_audit.runs.trend import sparkline
from tests.support.cli import run_cli
from tests.support.runs import all_ratios, norm_ratio, tree, write_mtp_run

FINAL = "model.norm.weight"


def _expected_first_out(ratios_by_step: dict[int, float], low: float = 0.5,
                        high: float = 1.8) -> int | None:
    # the default policy's final-norm severities: warn/fail below 0.5 (low, collapse) and
    # fail above 1.8 (explosion); growth (1.12-1.8) is informational
    for step in sorted(ratios_by_step):
        r = ratios_by_step[step]
        if r < low or r > high:
            return step
    return None


def test_trend_json_matches_independent_computation(llama_run):
    res = run_cli(["trend", llama_run, "--format", "json"])
    assert res.code == 1, res.err  # the run has a collapsed and an exploded final norm
    doc = json.loads(res.out)
    assert doc["schema"] == "ckpt-audit.trend/1"
    assert doc["run"] == llama_run
    steps = [c["step"] for c in doc["checkpoints"]]
    assert steps == sorted(steps) and len(steps) == 5
    expected = {}
    for c in doc["checkpoints"]:
        assert set(c) >= {"path", "step", "verdict", "final_ratio", "complete"}
        assert c["complete"] is True
        r = norm_ratio(c["path"])
        expected[c["step"]] = r
        assert c["final_ratio"] == pytest.approx(r, rel=1e-9, abs=1e-12)
        want = "fail" if (r < 0.4 or r > 1.8) else "warn" if r < 0.5 else "pass"
        assert c["verdict"] == want, (c["step"], r)
    assert doc["first_out_of_band"] == {FINAL: _expected_first_out(expected)}
    # jumps: |r_b / r_a - 1| > 0.30 between consecutive checkpoints
    ordered = [expected[s] for s in sorted(expected)]
    want_jumps = [(sorted(expected)[i], sorted(expected)[i + 1])
                  for i in range(len(ordered) - 1) if abs(ordered[i + 1] / ordered[i] - 1) > 0.30]
    assert [(j["step_from"], j["step_to"]) for j in doc["jumps"]] == want_jumps
    assert want_jumps  # the fixture has sudden jumps
    changes = [c["gains"][FINAL]["change"] for c in doc["checkpoints"]]
    assert changes[0] is None
    assert changes[1] == pytest.approx(ordered[1] / ordered[0] - 1, rel=1e-9)


def test_jump_threshold_is_configurable(llama_run):
    loose = json.loads(run_cli(["trend", llama_run, "-f", "json", "--jump", "100"]).out)
    assert loose["jumps"] == []
    tight = json.loads(run_cli(["trend", llama_run, "-f", "json", "--jump", "0.01"]).out)
    assert len(tight["jumps"]) == 4  # every consecutive pair moved more than 1 %


def test_trend_table_fixed_width_and_sparkline(llama_run):
    res = run_cli(["trend", llama_run, "--width", "100"])
    lines = res.out.splitlines()
    assert all(len(line) <= 100 for line in lines)
    ratios = [norm_ratio(os.path.join(llama_run, f"checkpoint-{s}")) for s in (0, 100, 200, 300,
                                                                               400)]
    spark = sparkline(ratios)
    row = next(line for line in lines if FINAL in line and spark in line)
    cells = [c.strip() for c in row.strip("│ ").split("│")]
    assert cells[0] == spark and cells[1] == FINAL and cells[2] == "final"
    assert cells[3] == f"{ratios[0]:.3f}" and cells[4] == f"{ratios[-1]:.3f}"
    assert cells[6] == "step 300"
    assert spark[3] == "▁" and spark[4] == "█"  # the collapse is lowest, the explosion highest
    assert "checkpoint-300" in res.out and "collapse" in res.out


def test_incomplete_checkpoint_is_listed_never_passing(llama_run):
    os.remove(os.path.join(llama_run, "checkpoint-100", "model-00001-of-00003.safetensors"))
    doc = json.loads(run_cli(["trend", llama_run, "-f", "json"]).out)
    c100 = next(c for c in doc["checkpoints"] if c["step"] == 100)
    assert c100["complete"] is False and c100["verdict"] == "incomplete"
    assert c100["final_ratio"] is None and c100["problems"]
    # a healthy-only run: exit code follows --incomplete
    for s in (300, 400):
        import shutil

        shutil.rmtree(os.path.join(llama_run, f"checkpoint-{s}"))
    assert run_cli(["trend", llama_run, "--incomplete", "ignore"]).code == 0
    assert run_cli(["trend", llama_run, "--incomplete", "fail"]).code == 1
    assert run_cli(["trend", llama_run]).code == 0  # warn does not fail at --fail-on fail
    assert run_cli(["trend", llama_run, "--fail-on", "warn"]).code == 1


def test_plot_png_is_valid_and_sized(llama_run, tmp_path):
    import matplotlib.image as mpimg
    from PIL import Image

    png = str(tmp_path / "trend.png")
    res = run_cli(["trend", llama_run, "--plot", png, "--plot-size", "900x500"])
    assert res.code == 1
    with Image.open(png) as im:
        im.verify()
    with Image.open(png) as im:
        assert im.format == "PNG" and im.size == (900, 500)
    arr = mpimg.imread(png)
    assert arr.shape[:2] == (500, 900)
    # band shading and the line are drawn: the image is far from uniform
    assert arr[..., :3].std() > 0.05
    # the policy's bands are shaded: sample the plot area (axes span 8-88 % of the width and
    # 10-92 % of the height, y from 0 to 1.1 x the largest ratio) at 30 % of its width
    top = max(norm_ratio(os.path.join(llama_run, f"checkpoint-{s}"))
              for s in (0, 100, 200, 300, 400)) * 1.1

    def pixel(ratio: float):
        row = int(500 * (1 - (0.1 + 0.82 * ratio / top)))
        return arr[row, int(900 * (0.08 + 0.8 * 0.3)), :3]

    for ratio in (0.2, 2.3):  # collapse / explosion: red tint
        r, g, b = pixel(ratio)
        assert r > g + 0.05 and r > b + 0.05, (ratio, r, g, b)
    r, g, b = pixel(1.06)  # nominal: green tint
    assert g > r + 0.05 and g > b + 0.05
    assert run_cli(["trend", llama_run, "--plot", os.path.join(llama_run, "x.png")]).code == 2


def test_markdown_junit_and_github_outputs(llama_run, tmp_path, monkeypatch):
    junit = tmp_path / "trend.xml"
    assert run_cli(["trend", llama_run, "-f", "junit", "-o", str(junit)]).code == 1
    root = ET.parse(junit).getroot()
    suites = root.findall("testsuite")  # one per checkpoint, a case per gain; then the run's
    assert len(suites) == 6 and suites[-1].get("name") == "run"
    # the run's own findings: jumps and the run signals (docs/SIGNALS.md); the fixture's layer
    # gains all shrink by one factor (0.94 at step 300), the weight-decay signature
    assert {c.get("name").split(":")[0] for c in suites[-1]} == {
        "trend-jump", "drift-rate", "gains-shrink-together"}
    failed = [s.get("name") for s in suites if s.get("failures") != "0"]
    # checkpoints 300 and 400 fail on their bands; the run on its drift rates (fail findings)
    assert failed == [f"step {n}: {llama_run}/checkpoint-{n}" for n in (300, 400)] + ["run"]
    summary = tmp_path / "summary.md"
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    res = run_cli(["trend", llama_run, "-f", "json", "-o", str(tmp_path / "t.json")])
    assert res.code == 1
    errors = [ln for ln in res.out.splitlines() if ln.startswith("::error ")]
    # the failing checkpoints' bands (collapse, explosion), then the run's drift rates (0.85 ->
    # 0.30 and 0.30 -> 2.60 in 100 steps: -0.55 and +2.32 per 100 steps, above the 0.5 fail)
    assert [ln.split("title=ckpt-audit ")[1].split("::")[0] for ln in errors] == \
        ["collapse", "explosion", "drift-rate", "drift-rate"], res.out
    assert errors[0].startswith(f"::error file={llama_run}/checkpoint-300,title=ckpt-audit "
                                "collapse::model.norm.weight")
    text = summary.read_text()
    assert text.startswith(f"## ckpt-audit trend: `{llama_run}` — **FAIL**")
    assert "first out of band at step **300**" in text
    # appended, not overwritten
    run_cli(["trend", llama_run, "-f", "json", "-o", str(tmp_path / "t.json")])
    assert summary.read_text().count("## ckpt-audit trend") == 2


def test_baseline_gate(llama_run, tmp_path):
    base = tmp_path / "base.json"
    assert run_cli(["audit", os.path.join(llama_run, "checkpoint-100"), "-f", "json",
                    "-o", str(base)]).code == 0
    doc = json.loads(run_cli(["trend", llama_run, "-f", "json", "--baseline", str(base)]).out)
    r100 = norm_ratio(os.path.join(llama_run, "checkpoint-100"))
    # like with like: the run starts at step 0 (from scratch), so a checkpoint is within budget
    # anywhere between the start (1) and the baseline's ratio, widened by 10 % each side
    lo, hi = min(1.0, r100) * 0.9, max(1.0, r100) * 1.1
    for c in doc["checkpoints"]:
        r = norm_ratio(c["path"])
        codes = {f["code"] for f in c["findings"]}
        assert ("baseline-drift" in codes) == (not lo <= r <= hi), (c["step"], r, lo, hi)
    assert {c["step"] for c in doc["checkpoints"]
            if any(f["code"] == "baseline-drift" for f in c["findings"])} == {200, 300, 400}
    # a run's own trend report as the baseline: step by step, so it never fails against itself
    run_base = tmp_path / "run_base.json"
    run_cli(["trend", llama_run, "-f", "json", "-o", str(run_base)])
    doc = json.loads(run_cli(["trend", llama_run, "-f", "json", "--baseline",
                              str(run_base)]).out)
    assert not any(f["code"].startswith("baseline") for c in doc["checkpoints"]
                   for f in c["findings"])
    res = run_cli(["audit", os.path.join(llama_run, "checkpoint-100"), "--baseline",
                   str(run_base)])
    assert res.code == 2 and "trend" in res.err
    # the knob: [baseline] max_drift in the policy file
    pol = tmp_path / "loose.toml"
    pol.write_text("[baseline]\nmax_drift = 0.2\n")
    doc = json.loads(run_cli(["trend", llama_run, "-f", "json", "--baseline", str(base),
                              "-c", str(pol)]).out)
    c200 = next(c for c in doc["checkpoints"] if c["step"] == 200)
    assert abs(norm_ratio(c200["path"]) / r100 - 1) < 0.2
    assert c200["verdict"] == "pass"
    bad = tmp_path / "bad.json"
    bad.write_text('{"schema": "something-else"}')
    res = run_cli(["trend", llama_run, "--baseline", str(bad)])
    assert res.code == 2 and str(bad) in res.err and "Traceback" not in res.err


def test_mtp_norms_are_tracked(tmp_path):
    run = write_mtp_run(str(tmp_path / "mtp"))
    before = tree(run)
    res = run_cli(["trend", run, "-f", "json"])
    doc = json.loads(res.out)
    hnorm = "model.layers.2.hnorm.weight"
    assert FINAL in doc["tracked"] and hnorm in doc["tracked"]
    for c in doc["checkpoints"]:
        indep = all_ratios(c["path"])
        for name, g in c["gains"].items():
            assert g["ratio"] == pytest.approx(indep[name], rel=1e-9)
        assert c["gains"][hnorm]["role"] == "mtp"
    # hnorm collapses at step 200 (MTP severity: warn); the final norm never leaves its band
    assert doc["first_out_of_band"] == {hnorm: 200}
    assert [c["verdict"] for c in doc["checkpoints"]] == ["pass", "pass", "warn"]
    assert res.code == 0 and run_cli(["trend", run, "--fail-on", "warn"]).code == 1
    assert tree(run) == before  # nothing written into the run


def test_not_a_run_is_a_clean_error(tmp_path):
    res = run_cli(["trend", str(tmp_path)])
    assert res.code == 2 and "no checkpoints in this run folder" in res.err


def test_demo_shows_the_trend():
    res = run_cli(["demo", "--width", "100"])
    assert res.code == 0, res.err
    assert "The run over time (ckpt-audit trend):" in res.out
    row = next(line for line in res.out.splitlines() if "model.norm.weight" in line
               and "0.250–2.400" in line)
    assert "step 2000" in row


def test_one_bad_checkpoint_does_not_stop_the_trend(tmp_path):
    import datetime

    import torch

    torch.save({"model.norm.weight": torch.ones(8)}, tmp_path / "step_1.pt")
    # a pickle that asks for a global off the allowlist: refused, never executed
    torch.save({"model.norm.weight": torch.ones(8), "t": datetime.datetime(2020, 1, 1)},
               tmp_path / "step_2.pt")
    # 1.0 -> 0.999 in two steps: -0.05 per 100 steps, within every signal's threshold
    torch.save({"model.norm.weight": torch.full((8,), 0.999)}, tmp_path / "step_3.pt")
    res = run_cli(["trend", str(tmp_path), "-f", "json"])
    assert res.code == 1
    doc = json.loads(res.out)
    assert [c["verdict"] for c in doc["checkpoints"]] == ["pass", "error", "pass"]
    assert "datetime.datetime" in doc["checkpoints"][1]["error"]
    assert doc["checkpoints"][2]["final_ratio"] == pytest.approx(0.999, rel=1e-6)


def test_trend_on_safetensors_never_imports_torch(llama_run_master, tmp_path):
    import subprocess
    import sys

    code = ("import sys\nfrom ckpt_audit.cli import main\n"
            "import ckpt_audit.monitor\n"
            "try:\n    main(['trend', sys.argv[1], '-f', 'json', '-o', sys.argv[2]])\n"
            "except SystemExit:\n    pass\n"
            "print(sorted(m for m in ('torch', 'transformers', 'matplotlib', 'lightning')"
            " if m in sys.modules))\n")
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    out = subprocess.run([sys.executable, "-c", code, llama_run_master, str(tmp_path / "t.json")],
                         capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": root}, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
    assert json.loads((tmp_path / "t.json").read_text())["schema"] == "ckpt-audit.trend/1"


def test_deepspeed_shaped_run_written_by_torch_save(tmp_path):
    import torch

    from tests.support.runs import set_gains, tiny_llama

    model = tiny_llama(3)
    want = {}
    for step, factor in ((10, 1.0), (20, 0.7), (30, 0.2), (40, 0.9)):
        set_gains(model, factor, 1.0, step)
        d = tmp_path / f"global_step{step}"
        d.mkdir()
        # DeepSpeed's engine: torch.save({"module": state_dict, ...}) per tensor-parallel rank
        torch.save({"module": model.state_dict(), "global_steps": step},
                   d / "mp_rank_00_model_states.pt")
        w = model.model.norm.weight.detach().double()
        want[step] = float(w.norm() / w.numel() ** 0.5)
    (tmp_path / "latest").write_text("global_step30")  # step 40 not finalised yet
    doc = json.loads(run_cli(["trend", str(tmp_path), "-f", "json"]).out)
    got = {c["step"]: c for c in doc["checkpoints"]}
    for step in (10, 20, 30):
        assert got[step]["layout"] == "deepspeed"
        assert got[step]["final_ratio"] == pytest.approx(want[step], rel=1e-6)
    assert got[40]["verdict"] == "incomplete" and "tracker" in got[40]["problems"][0]
    assert doc["first_out_of_band"] == {FINAL: 30}
