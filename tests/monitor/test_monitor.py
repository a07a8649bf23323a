"""The training-time monitor with a real transformers Trainer, a real Lightning Trainer and a
plain loop on a tiny Llama; logged ratios checked against torch and against the checkpoint audit."""

from __future__ import annotations

import csv
import json
import math
import os
import warnings

import pytest

from ckpt_audit.monitor import (
    GainBandWarning,
    GainMonitor,
    GainOutOfBandError,
    InitNormError,
    mtp_lambda,
    mtp_scaling_hint,
)
from tests.support.cli import run_cli
from tests.support.runs import tiny_llama

KEY = "gain_ratio/model.norm.weight"


def _ratio(p) -> float:
    return float(p.detach().double().norm() / math.sqrt(p.numel()))


def _dataset(n: int = 16, seq: int = 16):
    import torch

    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 128, (n, seq), generator=g)
    return [{"input_ids": r, "labels": r.clone()} for r in ids]


def _trainer(model, out: str, **args):
    from transformers import Trainer, TrainingArguments

    kw = {"save_strategy": "no", "learning_rate": 5e-2, "logging_steps": 1, **args}
    targs = TrainingArguments(output_dir=out, max_steps=4, per_device_train_batch_size=4,
                              report_to="none", use_cpu=True, disable_tqdm=True, **kw)
    return Trainer(model=model, args=targs, train_dataset=_dataset())


def test_hf_trainer_callback_logs_ratios_and_matches_checkpoint_audit(tmp_path):
    from ckpt_audit.monitor.hf import GainMonitorCallback

    model = tiny_llama(0)
    out = str(tmp_path / "out")
    trainer = _trainer(model, out, save_strategy="steps", save_steps=2)
    cb = GainMonitorCallback(every=2, log_roles=("final", "layer")).attach(trainer)
    trainer.train()
    logged = {h["step"]: h for h in trainer.state.log_history if KEY in h}
    assert sorted(logged) == [0, 2, 4]
    assert logged[0][KEY] == 1.0  # all-ones init: ratio exactly 1
    assert logged[4][KEY] == pytest.approx(_ratio(model.model.norm.weight), rel=1e-9)
    assert logged[4][KEY] != 1.0  # training moved the gain
    assert "gain_ratio/layer_min" in logged[2] and "gain_ratio/layer_max" in logged[2]
    assert [s for s, _ in cb.monitor.history] == [0, 2, 4]
    # the Trainer's own checkpoints: the audit sees what the monitor logged at the same steps
    doc = json.loads(run_cli(["trend", out, "-f", "json"]).out)
    assert [c["step"] for c in doc["checkpoints"]] == [2, 4]
    assert all(c["complete"] for c in doc["checkpoints"])
    for c in doc["checkpoints"]:
        assert c["final_ratio"] == pytest.approx(logged[c["step"]][KEY], rel=1e-6)


def test_hf_trainer_init_check_raises(tmp_path):
    import torch

    from ckpt_audit.monitor.hf import GainMonitorCallback

    model = tiny_llama(0)
    with torch.no_grad():
        model.model.layers[1].input_layernorm.weight.mul_(0.5)
    trainer = _trainer(model, str(tmp_path / "o"))
    GainMonitorCallback(every=2).attach(trainer)
    with pytest.raises(InitNormError, match="model.layers.1.input_layernorm.weight"):
        trainer.train()


def _losses(history) -> list[tuple[int, float]]:
    return [(h["step"], h["loss"]) for h in history if "loss" in h]


@pytest.mark.parametrize("attach", [True, False])
def test_monitor_leaves_the_trainers_own_logs_intact(tmp_path, attach):
    """every == logging_steps: the Trainer's training-loss entries are the same with and without
    the monitor, and the monitor's step-0 ratios are logged once, as an entry of their own."""
    from transformers import Trainer

    from ckpt_audit.monitor.hf import GainMonitorCallback

    plain = _trainer(tiny_llama(0), str(tmp_path / "a"), logging_steps=2, learning_rate=1e-3)
    plain.train()
    want = _losses(plain.state.log_history)
    assert [s for s, _ in want] == [2, 4]
    model = tiny_llama(0)
    cb = GainMonitorCallback(every=2, on_violation="ignore")
    if attach:
        trainer = _trainer(model, str(tmp_path / "b"), logging_steps=2, learning_rate=1e-3)
        cb.attach(trainer)
    else:
        base = _trainer(model, str(tmp_path / "b"), logging_steps=2, learning_rate=1e-3)
        trainer = Trainer(model=model, args=base.args, train_dataset=_dataset(), callbacks=[cb])
    trainer.train()
    history = trainer.state.log_history
    assert _losses(history) == want
    ours = [h for h in history if KEY in h]
    assert [h["step"] for h in ours] == [0, 2, 4]  # step 0 once, never overwritten
    assert ours[0][KEY] == 1.0
    assert not any(KEY in h and "loss" in h for h in history)  # never merged into its entries
    assert [h["step"] for h in history if "step" in h] == sorted(
        h["step"] for h in history if "step" in h)


def test_unattached_callback_still_reaches_log_history(tmp_path):
    from ckpt_audit.monitor.hf import GainMonitorCallback

    model = tiny_llama(0)
    from transformers import Trainer, TrainingArguments

    targs = TrainingArguments(output_dir=str(tmp_path / "o"), max_steps=2,
                              per_device_train_batch_size=4, report_to="none", logging_steps=1,
                              use_cpu=True, disable_tqdm=True, save_strategy="no")
    trainer = Trainer(model=model, args=targs, train_dataset=_dataset(),
                      callbacks=[GainMonitorCallback(every=1)])
    trainer.train()
    assert any(KEY in h for h in trainer.state.log_history)


def test_plain_loop_warns_and_raises_when_a_gain_leaves_its_band():
    import torch

    model = tiny_llama(1)
    seen: list[tuple[int, dict]] = []
    mon = GainMonitor(every=2)
    assert mon.step(model, 0, log=lambda m, s: seen.append((s, m)))[KEY] == 1.0
    assert mon.step(model, 1) is None  # not due
    with torch.no_grad():
        model.model.norm.weight.mul_(0.3)  # collapse: the final role fails
    with pytest.warns(GainBandWarning, match="model.norm.weight ratio 0.300 \\(collapse, fail\\)"):
        mon.step(model, 2, log=lambda m, s: seen.append((s, m)))
    assert [s for s, _ in seen] == [0, 2]
    assert seen[1][1][KEY] == pytest.approx(0.3, rel=1e-6)
    with pytest.raises(GainOutOfBandError):
        GainMonitor(every=1, on_violation="raise").step(model, 4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        GainMonitor(every=1, on_violation="ignore").step(model, 4)


def test_plain_loop_flags_the_run_signals_trend_flags():
    """The first measurement after step 0 is compared with step 0: a final gain shrunk by 25 %
    in 10 steps is a drift rate of -2.5 per 100 steps (fail); the channel spread and the negative
    channels are flagged from the same function ``trend`` uses."""
    import torch

    model = tiny_llama(3)
    mon = GainMonitor(every=10, on_violation="raise")
    mon.step(model, 0)
    with torch.no_grad():
        model.model.norm.weight.mul_(0.75)
    with pytest.raises(GainOutOfBandError, match="drift-rate model.norm.weight.*-2.500 per 100"):
        mon.step(model, 10)
    assert [(s, f.code, f.severity.value) for s, f in mon.findings] == [
        (10, "drift-rate", "fail")]
    with torch.no_grad():
        w = model.model.norm.weight
        w.copy_(torch.where(torch.arange(w.numel()) % 3 == 0, -w, w))  # a third negative
    with pytest.raises(GainOutOfBandError, match="channel-negative"):
        mon.step(model, 20)
    codes = {f.code for s, f in mon.findings if s == 20}
    assert {"channel-negative", "channel-spread"} <= codes


def test_offset_convention_init_check():
    import torch
    from transformers import Gemma2Config, Gemma2ForCausalLM

    cfg = Gemma2Config(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                       num_attention_heads=2, num_key_value_heads=1, head_dim=16, vocab_size=64)
    torch.manual_seed(0)
    model = Gemma2ForCausalLM(cfg)
    assert float(model.model.norm.weight.detach().abs().max()) == 0.0  # stored w = 0, γ_eff = 1 + w
    readings = GainMonitor(every=1).check_init(model)  # no error: γ_eff is all ones
    final = next(r for r in readings if r.role.value == "final")
    assert final.ratio == 1.0 and final.dim == 32


def test_lightning_callback_logs_through_the_trainers_loggers(tmp_path):
    L = pytest.importorskip("lightning", reason="lightning not installed (pip install "
                            "lightning==2.6.6 to run the Lightning callback test)")
    import torch
    from lightning.pytorch.loggers import CSVLogger

    from ckpt_audit.monitor.lightning import GainMonitorLightning

    class Module(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.model = tiny_llama(2)

        def training_step(self, batch, batch_idx):
            return self.model(input_ids=batch, labels=batch).loss

        def configure_optimizers(self):
            return torch.optim.AdamW(self.parameters(), lr=5e-2)

    data = torch.utils.data.DataLoader(torch.randint(0, 128, (16, 16)), batch_size=4)
    module = Module()
    logger = CSVLogger(str(tmp_path), name="lt")
    cb = GainMonitorLightning(every=2)
    trainer = L.Trainer(max_steps=4, logger=logger, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False,
                        accelerator="cpu", log_every_n_steps=1, callbacks=[cb])
    trainer.fit(module, data)
    assert [s for s, _ in cb.monitor.history] == [0, 2, 4]
    with open(os.path.join(logger.log_dir, "metrics.csv")) as fh:
        rows = [r for r in csv.DictReader(fh) if r.get(KEY)]
    assert rows, "no gain ratio in the CSV logger's metrics"
    by_step = {int(r["step"]): float(r[KEY]) for r in rows}
    assert by_step[0] == 1.0
    last = max(by_step)
    assert last > 0
    assert by_step[last] == pytest.approx(_ratio(module.model.model.norm.weight), rel=1e-5)


def test_lambda_schedule_and_hint():
    assert mtp_lambda(0) == 0.3 and mtp_lambda(9.99e12) == 0.3 and mtp_lambda(10e12) == 0.1
    assert mtp_scaling_hint(1.0) is None
    low = mtp_scaling_hint(0.3)
    assert low is not None and "below" in low and "measure" in low
    assert "above" in (mtp_scaling_hint(2.5) or "")
