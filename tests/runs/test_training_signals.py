"""The short version of benchmarks/training_signals.py: real transformers Trainer runs on CPU.

Healthy runs of two seeds pass; weight decay on the norm gains is flagged; a too-high learning
rate fails at the first checkpoint; the monitor raises the same signals as ``trend`` at the same
steps; a run against a baseline compares like with like. Figures are checked against the
official safetensors reader and numpy. About a minute and a half on two shared CPU cores.
"""

from __future__ import annotations

import glob
import json
import os

import pytest

from benchmarks.training_signals import QUICK, experiment
from ckpt_audit.core.signals import SIGNAL_CODES
from tests.support.cli import run_cli


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("training_signals"))
    return root, {r.spec.name: r for r in experiment(root, QUICK, monitor=True)}


def _gain(folder: str, name: str = "model.norm.weight"):
    import numpy as np
    from safetensors import safe_open

    (path,) = glob.glob(os.path.join(folder, "*.safetensors"))
    with safe_open(path, framework="np") as fh:
        return fh.get_tensor(name).astype(np.float64)


def test_healthy_runs_of_two_seeds_pass(runs):
    _, res = runs
    for name in ("healthy-s0", "healthy-s1"):
        r = res[name]
        assert (r.trend["verdict"], r.exit_code) == ("pass", 0), r.fires
        assert r.trend["reference"]["kind"] == "known-start"


def test_weight_decay_on_the_gains_is_flagged_at_the_first_checkpoint(runs):
    _, res = runs
    r = res["wd-gains"]
    assert r.trend["verdict"] == "warn"
    first = r.trend["checkpoints"][0]
    layer = [f for f in r.trend["signals"]
             if f["step"] == first["step"] and f["tensor"] == "layer gains (median)"]
    assert layer and layer[0]["code"] in ("drift-rate", "gains-shrink-together"), r.trend["signals"]
    assert first["layers"]["shrinking"] == 1.0  # every layer gain shrank
    assert "per 100 steps" in layer[0]["message"] and "known start (step 0)" in layer[0]["message"]


def test_too_high_learning_rate_fails_at_the_first_checkpoint(runs):
    import numpy as np

    _, res = runs
    r = res["lr-high"]
    assert r.exit_code == 1
    first = r.trend["checkpoints"][0]
    assert first["step"] == QUICK.every
    fails = [f for f in r.trend["signals"] if f["step"] == first["step"]
             and f["severity"] == "fail"]
    assert fails, r.trend["signals"]  # the run fails at its first checkpoint
    # the figures behind it, independently: safetensors + numpy
    w = _gain(first["path"])
    g = first["gains"]["model.norm.weight"]
    rms = float(np.sqrt(np.mean(w * w)))
    assert g["ratio"] == pytest.approx(rms, rel=1e-12)
    assert g["spread"] == pytest.approx(float(w.std()) / rms, rel=1e-9)
    assert g["negative"] == float((w < 0).mean())
    assert g["rate"] == pytest.approx((rms - 1.0) / QUICK.every * 100, rel=1e-9)
    assert g["change"] == pytest.approx(rms - 1.0, rel=1e-9)  # against the known start


def test_monitor_raises_the_same_signals_as_trend(runs):
    _, res = runs
    for r in res.values():
        by_trend = sorted((f["step"], f["code"], f["tensor"], f["severity"])
                          for f in r.trend["signals"] if f["code"] in SIGNAL_CODES)
        by_monitor = sorted((s, f.code, f.tensor, f.severity.value)
                            for s, f in r.monitor.monitor.findings)
        assert by_monitor == by_trend, r.spec.name
    assert res["lr-high"].monitor.monitor.findings  # there is something to compare


def test_baseline_compares_like_with_like(runs, tmp_path):
    root, _ = runs
    good = os.path.join(root, "healthy-s0")
    base_run = tmp_path / "good_run.json"
    assert run_cli(["trend", good, "-f", "json", "-o", str(base_run)]).code == 0
    last = sorted(glob.glob(os.path.join(good, "checkpoint-*")),
                  key=lambda p: int(p.rsplit("-", 1)[1]))[-1]
    base_ckpt = tmp_path / "good_ckpt.json"
    assert run_cli(["audit", last, "-f", "json", "-o", str(base_ckpt)]).code == 0
    for base in (base_run, base_ckpt):
        for run in ("healthy-s0", "healthy-s1"):
            res = run_cli(["trend", os.path.join(root, run), "-f", "json", "--baseline",
                           str(base)])
            doc = json.loads(res.out)
            assert res.code == 0, (base.name, run, [c["findings"] for c in doc["checkpoints"]])


def test_watch_stops_a_too_high_learning_rate_at_its_first_checkpoint(runs, tmp_path):
    root, _ = runs
    res = run_cli(["watch", os.path.join(root, "lr-high"), "--once", "--settle", "0",
                   "--exit-on", "fail", "--state", str(tmp_path / "state.json")])
    assert res.code == 1
    assert f"stopping: checkpoint-{QUICK.every} reached --exit-on fail" in res.out
    assert "channel-spread model.norm.weight" in res.out
    healthy = run_cli(["watch", os.path.join(root, "healthy-s1"), "--once", "--settle", "0",
                       "--exit-on", "warn", "--state", str(tmp_path / "state2.json")])
    assert healthy.code == 0, healthy.out
