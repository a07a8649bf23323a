"""A transformers ``TrainerCallback`` that checks the init norms and logs every gain's ratio.

Attach it with :meth:`GainMonitorCallback.attach` so the ratios go through ``Trainer.log`` and so
reach every reporting integration (TensorBoard, W&B, ...) and ``trainer.state.log_history``, as
entries of their own. ``Trainer.log`` runs the callbacks' ``on_log``, and the Trainer's
``CallbackHandler.on_log`` clears ``control.should_log``: the monitor restores the flag, so the
Trainer still logs its own training loss at that step.

A callback passed as ``callbacks=[...]`` without ``attach`` cannot reach ``Trainer.log`` (the
Trainer gives callbacks no handle on itself); it then adds each measurement, with its own step, as
an entry of ``state.log_history`` just before the Trainer's next log entry (or at the end of
training), never into the Trainer's own entries; reporting integrations do not see them.
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
        self._pending: list[dict[str, float]] = []
        self._last_step: int | None = None

    def attach(self, trainer: Any) -> GainMonitorCallback:
        """Add this callback to ``trainer`` and log through ``trainer.log``."""
        self._trainer = trainer
        trainer.add_callback(self)
        return self

    def _emit(self, values: dict[str, float], state: Any, control: Any) -> None:
        if self._trainer is not None:
            # Trainer.log -> CallbackHandler.on_log clears control.should_log: keep the Trainer's
            # own decision to log this step (its training loss).
            should_log = getattr(control, "should_log", False)
            self._trainer.log(dict(values))
            if control is not None:
                control.should_log = should_log
        else:
            self._pending.append({**values, "step": int(state.global_step)})

    def _flush(self, state: Any, before_last: bool) -> None:
        if not self._pending:
            return
        at = len(state.log_history) - 1 if before_last and state.log_history else \
            len(state.log_history)
        state.log_history[at:at] = self._pending
        self._pending = []

    def _run(self, model: Any, state: Any, control: Any) -> None:
        step = int(state.global_step)
        if model is None or step == self._last_step or not self.monitor.due(step):
            return
        self._last_step = step
        if getattr(state, "is_world_process_zero", True):
            readings = (self.monitor.check_init(model) if step == 0
                        else self.monitor.measure(model))
            self._emit(self.monitor.evaluate(readings, step), state, control)

    def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None,
                       **kwargs: Any) -> None:
        if state.global_step == 0:
            self._run(model, state, control)

    def on_step_end(self, args: Any, state: Any, control: Any, model: Any = None,
                    **kwargs: Any) -> None:
        self._run(model, state, control)

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, float] | None = None,
               **kwargs: Any) -> None:
        # the Trainer appended its entry before calling on_log: ours go just before it
        self._flush(state, before_last=True)

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._flush(state, before_last=False)
