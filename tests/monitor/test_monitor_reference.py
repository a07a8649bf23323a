"""The monitor's ``reference="attach"``: a fine-tune's ratios are to the model as attached."""

from __future__ import annotations

import pytest
import torch

from ckpt_audit.monitor.core import GainMonitor, GainOutOfBandError, InitNormError
from tests.support.runs import set_gains, tiny_llama


def test_attach_reference_fine_tune() -> None:
    model = tiny_llama(0)
    set_gains(model, final=1.9, layer=0.3, seed=3)  # a released base: far from all ones
    with pytest.raises(InitNormError):
        GainMonitor(on_violation="raise").step(model, 0)
    mon = GainMonitor(on_violation="raise", reference="attach")
    metrics = mon.step(model, 0)
    assert metrics is not None and metrics["gain_ratio/model.norm.weight"] == 1.0
    with torch.no_grad():
        model.model.norm.weight.mul_(0.3)
    with pytest.raises(GainOutOfBandError, match="model.norm.weight ratio 0.300"):
        mon.step(model, 100)
