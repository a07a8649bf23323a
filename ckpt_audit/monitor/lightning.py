"""A Lightning ``Callback``: the step-0 init check, then the gains' ratios via ``self.log``.

Metrics go through ``pl_module.log_dict`` (so every logger the Trainer has, TensorBoard, W&B,
CSV, receives them); the step-0 values, measured before the first batch where ``self.log`` is not
allowed, go to ``trainer.loggers`` directly at step 0.
"""

from __future__ import annotations

from typing import Any

try:
    from lightning.pytorch.callbacks import Callback
except ImportError:  # pragma: no cover - the older package name
    from pytorch_lightning.callbacks import Callback  # type: ignore[no-redef,assignment]

from ckpt_audit.monitor.core import GainMonitor


class GainMonitorLightning(Callback):
    """Step-0 init check, then every ``monitor.every`` optimizer steps the gains' ratios."""

    def __init__(self, monitor: GainMonitor | None = None, **monitor_kwargs: Any) -> None:
        super().__init__()
        self.monitor = monitor or GainMonitor(**monitor_kwargs)
        self._last_step: int | None = None

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        if trainer.global_step != 0:
            return
        self._last_step = 0
        values = self.monitor.evaluate(self.monitor.check_init(pl_module), 0)
        if trainer.is_global_zero:
            for logger in trainer.loggers:
                logger.log_metrics(values, step=0)

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        step = int(trainer.global_step)
        if step == self._last_step or not self.monitor.due(step):
            return
        self._last_step = step
        values = self.monitor.evaluate(self.monitor.measure(pl_module), step)
        pl_module.log_dict(values, on_step=True, on_epoch=False)
