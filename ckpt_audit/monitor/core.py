"""The framework-free core of the training-time monitor: read gains from a live ``nn.Module``.

The gains are found with the same discovery and role tables as the checkpoint audit
(:func:`ckpt_audit.core.discovery.discover`), applied to the module's parameter names (wrapper
prefixes
such as ``module.``, ``_orig_mod.`` or a Lightning attribute like ``model.`` are stripped), so
``model.norm.weight`` of a live Llama is the ``final`` gain exactly as in its checkpoint. Each
gain's statistics come from :func:`ckpt_audit.core.stats.gain_stats` and its status from the policy,
so
the numbers match ``ckpt-audit audit`` on a checkpoint saved at the same step.

Step 0 check (the article's ``assert abs(norm0 - sqrt(d_model)) < 0.01``), generalised: every
gain's ‖γ_eff‖₂ must be within ``init_tol`` of √n, its own length, with γ_eff = 1 + w under the
offset convention.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

from ckpt_audit.core.signals import GainPoint, Snapshot, choose_start, out_of_band, step_findings
from ckpt_audit.records import Convention, Finding, Role, Severity, Status, TensorInfo, frozen

_WRAPPERS = ("module.", "_orig_mod.", "_forward_module.", "_fsdp_wrapped_module.")
_TORCH_DTYPES = {"torch.float32": "F32", "torch.bfloat16": "BF16", "torch.float16": "F16",
                 "torch.float64": "F64"}


class InitNormError(AssertionError):
    """A gain's norm at step 0 is not √n: the initialisation is wrong."""


class GainOutOfBandError(RuntimeError):
    """A gain left its band during training (raised when the monitor is set to ``raise``)."""


class GainBandWarning(UserWarning):
    """A gain left its band during training (the default action)."""


@frozen
class GainReading:
    """One gain of the live model at one step."""

    name: str
    role: Role
    layer: int | None
    dim: int
    norm: float
    ratio: float
    status: Status
    severity: Severity
    spread: float = 0.0
    negative: float = 0.0

    @property
    def out_of_band(self) -> bool:
        """:func:`ckpt_audit.core.signals.out_of_band`, the rule ``trend`` uses."""
        return out_of_band(self.severity, self.status)

    def point(self) -> GainPoint:
        return GainPoint(self.name, self.role, self.layer, self.ratio, self.spread, self.negative)


def _strip_wrappers(name: str) -> str:
    from ckpt_audit.readers.torch_reader import strip_prefixes

    return strip_prefixes(name, _WRAPPERS)


def _model_config(module: Any) -> tuple[str, dict[str, Any]]:
    """``(prefix, config dict)`` of the first submodule carrying a transformers-style config."""
    for prefix, sub in module.named_modules():
        cfg = getattr(sub, "config", None)
        if cfg is not None and hasattr(cfg, "to_dict"):
            try:
                data = cfg.to_dict()
            except Exception:  # noqa: BLE001 - a foreign config object: use what we can
                continue
            return (_strip_wrappers(prefix + ".") if prefix else ""), dict(data)
    return "", {}


def find_gains(module: Any, *, config: Mapping[str, Any] | None = None
               ) -> tuple[list[tuple[str, Role, int | None, Any]], dict[str, Any]]:
    """The gains of a live module: ``[(name, role, layer, parameter)]`` and the config used.

    Names are the module's parameter names less wrapper prefixes and, for a transformers model
    held inside another module (a LightningModule's ``self.model``), less the path to it.
    """
    from ckpt_audit.core.discovery import discover

    prefix, found_cfg = _model_config(module)
    cfg = dict(config) if config is not None else found_cfg
    params: dict[str, Any] = {}
    infos: dict[str, TensorInfo] = {}
    for raw, p in module.named_parameters():
        name = _strip_wrappers(raw)
        if prefix and name.startswith(prefix):
            name = name[len(prefix):]
        params[name] = p
        infos[name] = TensorInfo(name, tuple(p.shape), _TORCH_DTYPES.get(str(p.dtype), "F32"),
                                 "<module>")
    gains = [(c.name, c.role, c.layer, params[c.name]) for c in discover(infos, cfg).gains
             if c.name in params]
    return gains, cfg


def read_gains(module: Any, *, policy: Any = None, convention: Convention | None = None,
               config: Mapping[str, Any] | None = None, reference: Any = None
               ) -> list[GainReading]:
    """Measure every gain of ``module`` now and classify it with ``policy`` (default policy).

    With a checkpoint ``reference`` (:class:`ckpt_audit.core.reference.Reference`) a gain's ratio
    is ‖γ_eff‖₂ / ‖γ_eff,REF‖₂ of the same-named gain (√n for a gain the reference lacks)."""
    import numpy as np

    from ckpt_audit.core.conventions import convention_for, resolve_convention
    from ckpt_audit.core.policy import load_policy
    from ckpt_audit.core.stats import gain_stats

    pol = policy if policy is not None else load_policy(None)
    gains, cfg = find_gains(module, config=config)
    default_conv, _why = resolve_convention(cfg, convention, None)
    if default_conv is Convention.NONE:
        default_conv = Convention.DIRECT  # a module with parameters named like gains has gains
    out = []
    for name, role, layer, p in gains:
        values = np.asarray(p.detach().float().cpu().numpy(), dtype=np.float64).reshape(-1)
        conv = convention_for(name, default_conv, cfg, convention is not None)
        st = gain_stats(values, conv, pol.near_zero)
        ref = reference.lookup(name) if reference is not None and not reference.is_init else None
        if ref is not None and ref[1] == st.dim and ref[0] > 0:
            st = replace(st, ratio=st.norm / ref[0])
            status, severity = pol.for_reference().classify(st.ratio, role)
        else:
            status, severity = pol.classify(st.ratio, role)
        if st.nonfinite:
            status, severity = Status.NONFINITE, Severity.FAIL
        out.append(GainReading(name, role, layer, st.dim, st.norm, st.ratio, status, severity,
                               st.spread, st.negative))
    return out


def init_errors(readings: list[GainReading], tol: float = 0.01) -> list[str]:
    """Gains whose step-0 norm is not √n within ``tol`` (the article's init assert, per gain)."""
    bad = []
    for r in readings:
        expected = math.sqrt(r.dim)
        if not (abs(r.norm - expected) < tol):
            bad.append(f"{r.name}: ‖γ‖₂ = {r.norm:.6f}, expected √{r.dim} = {expected:.6f} "
                       f"(|diff| {abs(r.norm - expected):.3g} ≥ {tol})")
    return bad


def metrics(readings: list[GainReading], *, roles: tuple[str, ...] = ("final", "mtp"),
            prefix: str = "gain_ratio/") -> dict[str, float]:
    """Scalars to log: each gain of ``roles`` by name, plus min/max per role present."""
    out: dict[str, float] = {}
    by_role: dict[str, list[float]] = {}
    for r in readings:
        if r.role.value in roles or "all" in roles:
            out[f"{prefix}{r.name}"] = r.ratio
        by_role.setdefault(r.role.value, []).append(r.ratio)
    for role, values in sorted(by_role.items()):
        out[f"{prefix}{role}_min"] = min(values)
        out[f"{prefix}{role}_max"] = max(values)
    return out


class GainMonitor:
    """Framework-free monitor: call :meth:`step` from any training loop.

    ``every``: measure every N steps (and at step 0). ``on_violation``: ``warn`` (a
    :class:`GainBandWarning`), ``raise`` (:class:`GainOutOfBandError`) or ``ignore`` when a gain is
    out of band or a run signal fires (the signals of ``trend``:
    :func:`ckpt_audit.core.signals.step_findings` against the previous measurement, the first
    measurement being compared with the known start). ``init_check``: ``raise``
    (:class:`InitNormError`), ``warn`` or ``off`` for the step-0 check. ``log_roles``: roles
    logged gain by gain (others as min/max only). ``findings`` keeps ``(step, Finding)`` of every
    signal at warn or above. ``reference``: ``None`` (ratios to √n, the all-ones init),
    ``"attach"`` (ratios to the model as it is when the monitor first sees it: a fine-tune's
    base; the step-0 check is then off), a checkpoint path, or a
    :class:`~ckpt_audit.core.reference.Reference`.
    """

    def __init__(self, policy: Any = None, *, every: int = 100, on_violation: str = "warn",
                 init_check: str = "raise", init_tol: float = 0.01,
                 log_roles: tuple[str, ...] = ("final", "mtp"), prefix: str = "gain_ratio/",
                 convention: Convention | None = None, reference: Any = None) -> None:
        if every < 1:
            raise ValueError("every must be >= 1")
        for what, value, allowed in (("on_violation", on_violation, ("warn", "raise", "ignore")),
                                     ("init_check", init_check, ("raise", "warn", "off"))):
            if value not in allowed:
                raise ValueError(f"{what} must be one of {allowed}, not {value!r}")
        self.policy, self.every, self.on_violation = policy, every, on_violation
        self.init_check, self.init_tol, self.log_roles = init_check, init_tol, log_roles
        self.prefix, self.convention = prefix, convention
        self.history: list[tuple[int, list[GainReading]]] = []
        self.findings: list[tuple[int, Finding]] = []
        self._prev: Snapshot | None = None
        self._reference: Snapshot | None = None
        self.reference_spec = reference
        self.reference: Any = None
        if isinstance(reference, str) and reference != "attach":
            from ckpt_audit.core.audit import load_reference

            self.reference = load_reference(reference, convention=convention)
        elif reference is not None and not isinstance(reference, str):
            self.reference = reference

    def attach(self, module: Any) -> None:
        """Take the model as it is now as the reference (``reference="attach"``)."""
        from ckpt_audit.core.reference import from_norms

        readings = read_gains(module, policy=self.policy, convention=self.convention)
        self.reference = from_norms("attach", {r.name: (r.norm, r.dim) for r in readings})

    def due(self, step: int) -> bool:
        return step == 0 or step % self.every == 0

    def measure(self, module: Any) -> list[GainReading]:
        if self.reference_spec == "attach" and self.reference is None:
            self.attach(module)
        return read_gains(module, policy=self.policy, convention=self.convention,
                          reference=self.reference)

    def check_init(self, module: Any) -> list[GainReading]:
        """The step-0 check; raises :class:`InitNormError` (or warns) when a gain is not √n."""
        readings = self.measure(module)
        bad = init_errors(readings, self.init_tol) if self.reference_spec is None else []
        if bad and self.init_check != "off":
            msg = "gain norms at step 0 are not √n (initialisation is wrong): " + "; ".join(bad)
            if self.init_check == "raise":
                raise InitNormError(msg)
            warnings.warn(msg, GainBandWarning, stacklevel=2)
        return readings

    def signals(self, readings: list[GainReading], step: int) -> tuple[Finding, ...]:
        """The run signals of this measurement (the same function ``trend`` uses)."""
        from ckpt_audit.core.policy import load_policy

        if self.policy is None:
            self.policy = load_policy(None)
        sp = self.policy.signals
        snap = Snapshot.of(step, (r.point() for r in readings))
        prev = self._prev
        if prev is None:
            prev, _why = choose_start([snap], sp)
            self._reference = prev if prev is not None else snap
        self._prev = snap
        if prev is None or self._reference is None:
            return ()
        names = [r.name for r in readings if r.role.value in self.log_roles
                 or "all" in self.log_roles]
        return tuple(f for f in step_findings(prev, snap, self._reference, sp, jump_names=names)
                     if f.severity.rank >= Severity.WARN.rank)

    def evaluate(self, readings: list[GainReading], step: int) -> dict[str, float]:
        """Record ``readings``, act on out-of-band gains and signals, return the metrics to log."""
        self.history.append((step, readings))
        found = self.signals(readings, step)
        self.findings += [(step, f) for f in found]
        out = [f"{r.name} ratio {r.ratio:.3f} ({r.status.value}, {r.severity.value})"
               for r in readings if r.out_of_band]
        out += [f"[{f.severity.value}] {f.code} {f.tensor}: {f.message}" for f in found]
        if out and self.on_violation != "ignore":
            msg = f"step {step}: gain(s) out of band or run signal: " + "; ".join(out)
            if self.on_violation == "raise":
                raise GainOutOfBandError(msg)
            warnings.warn(msg, GainBandWarning, stacklevel=3)
        return metrics(readings, roles=self.log_roles, prefix=self.prefix)

    def step(self, module: Any, step: int,
             log: Callable[[dict[str, float], int], None] | None = None) -> dict[str, float] | None:
        """For custom loops: at step 0 the init check, every ``every`` steps measure and log.

        ``log(metrics, step)`` is your logger (e.g. ``lambda m, s: writer.add_scalars(...)`` or
        ``wandb.log``); returns the metrics, or ``None`` when this step is not due.
        """
        if not self.due(step):
            return None
        readings = self.check_init(module) if step == 0 else self.measure(module)
        result = self.evaluate(readings, step)
        if log is not None:
            log(result, step)
        return result


def mtp_lambda(tokens_seen: float, *, early: float = 0.3, late: float = 0.1,
               switch_tokens: float = 10e12) -> float:
    """DeepSeek-V3's MTP loss weight schedule: 0.3 for the first 10T tokens, then 0.1."""
    return early if tokens_seen < switch_tokens else late


def mtp_scaling_hint(final_ratio: float, *, low: float = 0.4, high: float = 1.8) -> str | None:
    """A hint about ``mtp_loss_scaling_factor`` when the final norm's ratio leaves [low, high].

    Honest caveat (docs/RUNS.md): the article reads a collapsed/exploded final gain as a distorted
    MTP gradient balance, but the MTP module reads the hidden state *before* the final norm; in a
    measurement on stories260K the MTP share of the trunk gradient went *up* when the final gain
    shrank. Measure the balance (e.g. per-loss gradient norms) before changing λ.
    """
    if low <= final_ratio <= high:
        return None
    where = "below" if final_ratio < low else "above"
    return (f"final-norm ratio {final_ratio:.3f} is {where} [{low}, {high}]: the article suggests "
            "revisiting mtp_loss_scaling_factor, but the MTP branch reads h before the final norm, "
            "so measure the main/MTP gradient balance before lowering or raising it")
