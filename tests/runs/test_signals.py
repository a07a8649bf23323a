"""The run signals' definitions (core/signals.py) and their policy section, on hand-made points;
numbers checked against numpy. Real Trainer runs: test_training_signals.py."""

from __future__ import annotations

import sys
from dataclasses import asdict

import numpy as np
import pytest

from ckpt_audit.core.policy import Bands, SignalPolicy, default_policy_text, load_policy
from ckpt_audit.core.signals import (
    GainPoint,
    Snapshot,
    choose_start,
    collective,
    known_start,
    step_findings,
)
from ckpt_audit.errors import PolicyError
from ckpt_audit.records import Role, Status

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


def _snap(step: int, final: float, layers: list[float], spread: float = 0.0,
          negative: float = 0.0) -> Snapshot:
    gains = [GainPoint("model.norm.weight", Role.FINAL, None, final, spread, negative)]
    gains += [GainPoint(f"model.layers.{i}.input_layernorm.weight", Role.LAYER, i, r, 0.0, 0.0)
              for i, r in enumerate(layers)]
    return Snapshot.of(step, gains)


def test_signal_defaults_are_the_shipped_policy_file():
    shipped = tomllib.loads(default_policy_text())["signals"]
    assert {k: float(v) for k, v in shipped.items()} == asdict(SignalPolicy())
    assert load_policy(None).signals == SignalPolicy()


@pytest.mark.parametrize("table, msg", [
    ("[signals]\nbogus = 1\n", "unknown key 'bogus'"),
    ("[signals]\nrate_warn = -1\n", "non-negative"),
    ("[signals]\nrate_warn = 2\nrate_fail = 1\n", r"rate_warn \(2.0\) is above rate_fail"),
])
def test_signal_policy_is_validated(tmp_path, table, msg):
    p = tmp_path / "p.toml"
    p.write_text(table)
    with pytest.raises(PolicyError, match=msg):
        load_policy(p)


def test_band_text_is_the_inequality_classify_applies():
    b = Bands()
    for r in (0.39, 0.4, 0.45, 0.5, 0.7, 0.9, 1.0, 1.12, 1.5, 1.8, 1.9):
        status = b.classify(r)
        text = b.describe(status)
        expr = text.replace("≤", "<=").replace("r", repr(r))
        assert eval(expr), (r, status, text)  # noqa: S307 - our own inequality text
    assert b.describe(Status.LOW) == "0.4 ≤ r < 0.5"


def test_known_start_is_chosen_for_from_scratch_runs_only():
    sp = SignalPolicy()
    early = _snap(25, 0.2, [1.0, 1.0])
    start, why = choose_start([early], sp)
    assert start is not None and start.step == 0 and "known start" in why
    assert all(g.ratio == 1.0 and g.spread == 0.0 for g in start.gains.values())
    late_far = _snap(5000, 1.9, [1.2, 1.3])
    start, why = choose_start([late_far], sp)
    assert start is None and "not treated as from scratch" in why
    late_near = _snap(5000, 1.05, [0.98, 1.0])
    assert choose_start([late_near], sp)[0] is not None
    assert choose_start([_snap(0, 1.0, [1.0])], sp)[0] is None  # its own step-0 checkpoint


def test_rates_collective_and_channels_against_numpy():
    sp = SignalPolicy()
    layers = [0.91, 0.92, 0.93, 0.915]
    cur = _snap(50, 0.6, layers, spread=0.2, negative=0.25)
    start = known_start(cur)
    col = collective(cur, start)
    assert col is not None
    assert col.median == pytest.approx(float(np.median(layers)), rel=1e-15)
    assert col.spread == pytest.approx(float(np.std(layers) / np.median(layers)), rel=1e-12)
    assert col.shrinking == 1.0
    found = {(f.code, f.tensor): f for f in step_findings(start, cur, start, sp)}
    rate = found[("drift-rate", "model.norm.weight")]
    assert rate.severity.value == "fail" and "-0.800 per 100 steps" in rate.message
    assert "between known start (step 0) and step 50" in rate.message
    med = found[("drift-rate", "layer gains (median)")]
    assert f"{(np.median(layers) - 1) / 50 * 100:+.3f} per 100 steps" in med.message
    together = found[("gains-shrink-together", "layer gains (median)")]
    assert "exclude norm weights" in together.message
    assert found[("channel-spread", "model.norm.weight")].severity.value == "fail"  # +0.4/100
    assert found[("channel-negative", "model.norm.weight")].severity.value == "fail"
    # healthy: a few thousandths per 100 steps, layer gains moving both ways -> nothing
    calm = _snap(50, 1.03, [0.99, 1.01, 1.0, 0.995], spread=0.004)
    assert step_findings(known_start(calm), calm, known_start(calm), sp) == ()
