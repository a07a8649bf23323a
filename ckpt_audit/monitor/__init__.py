"""Training-time gain monitor: the audit's signal, live, through the trainer's own loggers.

- :class:`GainMonitor` (framework-free; call ``monitor.step(model, step, log)`` in a custom loop),
- :class:`GainMonitorCallback` for the transformers ``Trainer`` (``ckpt_audit.monitor.hf``),
- :class:`GainMonitorLightning` for Lightning (``ckpt_audit.monitor.lightning``),
- :func:`mtp_lambda` (DeepSeek-V3's λ schedule) and :func:`mtp_scaling_hint`.

The framework callbacks are imported lazily, so ``import ckpt_audit.monitor`` never imports
transformers or lightning.
"""

from __future__ import annotations

from typing import Any

from ckpt_audit.monitor.core import (
    GainBandWarning,
    GainMonitor,
    GainOutOfBandError,
    GainReading,
    InitNormError,
    init_errors,
    metrics,
    mtp_lambda,
    mtp_scaling_hint,
    read_gains,
)

__all__ = [
    "GainBandWarning", "GainMonitor", "GainMonitorCallback", "GainMonitorLightning",
    "GainOutOfBandError", "GainReading", "InitNormError", "init_errors", "metrics", "mtp_lambda",
    "mtp_scaling_hint", "read_gains",
]


def __getattr__(name: str) -> Any:
    if name == "GainMonitorCallback":
        from ckpt_audit.monitor.hf import GainMonitorCallback

        return GainMonitorCallback
    if name == "GainMonitorLightning":
        from ckpt_audit.monitor.lightning import GainMonitorLightning

        return GainMonitorLightning
    raise AttributeError(name)
