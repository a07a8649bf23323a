"""A transformers ``TrainerCallback`` that checks the init norms and logs every gain's ratio.

Attach it with :meth:`GainMonitorCallback.attach` so the ratios go through ``Trainer.log`` and so
reach every reporting integration (TensorBoard, W&B, ...) and ``trainer.state.log_history``. A
callback passed as ``callbacks=[...]`` without ``attach`` cannot reach ``Trainer.log`` (the
Trainer gives callbacks no handle on itself); it then adds its ratios to the next ``on_log`` call's
``logs`` and to ``state.log_history``, which reporters that run before it do not see.
"""

from __future__ import annotations

from typing import Any

from transformers import TrainerCallback

from ckpt_audit.monitor.core import GainMonitor


class GainMonitorCallback(TrainerCallback):
    """Step-0 init check, then the gains' ratios every ``monitor.every`` optimizer steps."""

    def __init__(self, monitor: GainMonitor | None = None, **monitor_kwargs: Any) -> None:
        self.monitor = monitor or GainMonitor(**monitor_kwargs)
        self._trainer: Any = None
        self._pending: dict[str, float] = {}
        self._last_step: int | None = None

    def attach(self, trainer: Any) -> GainMonitorCallback:
        """Add this callback to ``trainer`` and log through ``trainer.log``."""
        self._trainer = trainer
        trainer.add_callback(self)
        return self

    def _emit(self, values: dict[str, float], state: Any) -> None:
        if self._trainer is not None:
            self._trainer.log(dict(values))
        else:
            self._pending.update(values)

    def _run(self, model: Any, state: Any) -> None:
        step = int(state.global_step)
        if model is None or step == self._last_step or not self.monitor.due(step):
            return
        self._last_step = step
        if getattr(state, "is_world_process_zero", True):
            readings = (self.monitor.check_init(model) if step == 0
                        else self.monitor.measure(model))
            self._emit(self.monitor.evaluate(readings, step), state)

    def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None,
                       **kwargs: Any) -> None:
        if state.global_step == 0:
            self._run(model, state)

    def on_step_end(self, args: Any, state: Any, control: Any, model: Any = None,
                    **kwargs: Any) -> None:
        self._run(model, state)

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, float] | None = None,
               **kwargs: Any) -> None:
        if self._pending and logs is not None:
            logs.update(self._pending)
            if state.log_history:
                state.log_history[-1].update(self._pending)
            self._pending = {}
