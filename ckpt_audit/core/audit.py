"""The audit: reader → discovery → statistics → policy → findings → :class:`AuditReport`.

Pure orchestration over the pieces in :mod:`discovery`, :mod:`stats` and :mod:`policy`; it reads
only the gains' bytes (one batched ``read_many``) and never writes anything anywhere.
"""

from __future__ import annotations

import gc
import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

from ckpt_audit.core.conventions import convention_for, resolve_convention
from ckpt_audit.core.discovery import Discovery, discover
from ckpt_audit.core.layouts import ENCODER_MODEL_TYPES, d_model_from_config, model_type
from ckpt_audit.core.policy import Policy, load_policy
from ckpt_audit.core.stats import gain_stats_many
from ckpt_audit.errors import CkptAuditError
from ckpt_audit.readers import CheckpointReader, open_checkpoint
from ckpt_audit.records import (
    AuditReport,
    Convention,
    Finding,
    GainStats,
    NormRecord,
    Role,
    Severity,
    Status,
)
from ckpt_audit.storage import Location

DEVICES = ("auto", "cpu", "cuda")


def init_message(st: GainStats, policy: Policy) -> str:
    """The step-0 check's failure, with enough digits to see the tolerance being exceeded."""
    tol = policy.init_tolerance
    digits = max(4, 2 - math.floor(math.log10(tol))) if tol > 0 else 6
    root = math.sqrt(st.dim)
    return (f"step-0 check: ‖γ‖₂ = {st.norm:.{digits}f} but an all-ones gain has "
            f"√{st.dim} = {root:.{digits}f}: |Δ| = {abs(st.norm - root):.{digits}f} ≥ "
            f"tolerance {tol}; the initialization is wrong")


def _fmt(x: float) -> str:
    return f"{x:.4g}" if math.isfinite(x) else str(x)


def band_message(rec: NormRecord, policy: Policy) -> str:
    """One sentence for a gain outside the ok statuses."""
    s = rec.stats
    if rec.status is Status.NONFINITE:
        return f"{s.nonfinite} of {s.dim} channels are NaN or infinite"
    band = policy.bands_for(rec.role).describe(rec.status)
    return (f"‖γ‖₂ = {_fmt(s.norm)} is {s.ratio:.3f}×√{s.dim} "
            f"(√{s.dim} = {math.sqrt(s.dim):.4g}): {rec.status.value} ({band})")


def resolve_d_model(
    override: int | None, cfg: dict[str, Any], final_dim: int | None
) -> tuple[int | None, str]:
    """d_model and where it came from: ``--d-model`` > config > final norm's length."""
    if override is not None:
        return override, "--d-model"
    val, key = d_model_from_config(cfg)
    if val is not None:
        return val, f"config {key}"
    if final_dim is not None:
        return final_dim, "final norm length"
    return None, "unknown"


def _stats_for(values: dict[str, np.ndarray], convs: dict[str, Convention], near_zero: float,
               device: str) -> dict[str, GainStats]:
    if device == "cuda":
        from ckpt_audit.core.stats_torch import gain_stats_torch

        return gain_stats_torch(values, convs, near_zero, "cuda")
    return gain_stats_many(values, convs, near_zero)


def pick_device(device: str) -> str:
    """``auto`` is the CPU: gains are kilobytes, so a GPU transfer costs more than the maths."""
    if device not in DEVICES:
        raise CkptAuditError(f"--device must be one of {', '.join(DEVICES)}, not {device!r}")
    if device == "cuda":
        from ckpt_audit.core.stats_torch import require_cuda

        require_cuda()
    return "cpu" if device == "auto" else device


def audit_reader(
    reader: CheckpointReader,
    *,
    policy: Policy | None = None,
    d_model: int | None = None,
    convention: Convention | None = None,
    expect_init: bool = False,
    device: str = "cpu",
) -> AuditReport:
    """Audit an open checkpoint. See docs/METRICS.md for every figure's definition."""
    policy = policy or load_policy()
    device = pick_device(device)
    tensors = reader.tensors()
    cfg = reader.config()
    disc: Discovery = discover(tensors, cfg)
    default_conv, conv_why = resolve_convention(cfg, convention, reader.convention_hint)
    findings: list[Finding] = list(disc.findings)
    records: list[NormRecord] = []
    if default_conv is Convention.NONE and convention is None and disc.gains:
        default_conv, conv_why = Convention.DIRECT, "gains found despite a gain-less model type"
    if default_conv is not Convention.NONE:
        convs = {c.name: convention_for(c.name, default_conv, cfg, convention is not None)
                 for c in disc.gains}
        values = reader.read_many([c.name for c in disc.gains])
        stats = _stats_for(values, convs, policy.near_zero, device)
        for c in disc.gains:
            st = stats[c.name]
            status, severity = policy.classify(st.ratio, c.role)
            rec = NormRecord(c.name, c.role, c.layer, tensors[c.name].dtype, convs[c.name], st,
                             status, severity)
            records.append(rec)
            if severity is not Severity.OK:
                findings.append(Finding(severity, status.value, c.name, band_message(rec, policy)))
            if expect_init and not (abs(st.norm - math.sqrt(st.dim)) < policy.init_tolerance):
                findings.append(Finding(
                    Severity.FAIL, "init-mismatch", c.name, init_message(st, policy)))
    # reader findings last: some (tensor-parallel replica checks) are made while reading
    findings = list(reader.findings) + findings
    final = next((r for r in records if r.role is Role.FINAL), None)
    dm, dm_source = resolve_d_model(d_model, cfg, final.stats.dim if final else None)
    if default_conv is Convention.NONE:
        findings.append(Finding(Severity.INFO, "no-gains", None,
                                f"no gains to audit: {conv_why}"))
    elif not records:
        findings.append(Finding(Severity.WARN, "no-gains", None,
                                f"no normalization gains found among {len(tensors)} tensors"))
    elif final is None:
        encoder = model_type(cfg) in ENCODER_MODEL_TYPES
        findings.append(Finding(Severity.INFO if encoder else Severity.WARN, "no-final-norm",
                                None, "no final norm found (looked for model.norm, ln_f, "
                                "final_layernorm, output_norm, ...)"
                                + (": expected for a post-LN encoder" if encoder else "")))
    elif dm is not None and final.stats.dim != dm:
        findings.append(Finding(Severity.WARN, "d-model-mismatch", final.name,
                                f"final norm has length {final.stats.dim} but d_model is {dm} "
                                f"({dm_source})"))
    return AuditReport(
        checkpoint=reader.display,
        format=reader.format,
        d_model=dm,
        d_model_source=dm_source,
        convention=default_conv,
        norms=tuple(records),
        findings=tuple(findings),
        policy_name=policy.name,
        bytes_read=reader.bytes_read,
        tensors_total=len(tensors),
        extra={
            "convention_source": conv_why,
            "biases": len(disc.biases),
            "mtp_layout": disc.mtp_layout,
            "mtp_declared": disc.mtp_declared,
            "device": device,
        },
    )


def audit_checkpoint(
    path: str | Location,
    *,
    policy: Policy | None = None,
    format_hint: str | None = None,
    d_model: int | None = None,
    convention: Convention | None = None,
    expect_init: bool = False,
    device: str = "cpu",
) -> AuditReport:
    """Open ``path`` (file, folder or URL) and audit it; the reader is closed before returning.

    Args:
        path: a checkpoint file or folder, local or a URL (see
            :func:`~ckpt_audit.readers.open_checkpoint`), or a built ``Location``.
        policy: the bands and thresholds (:func:`~ckpt_audit.core.policy.load_policy`); the
            shipped default when ``None``.
        format_hint: force a reader (``ckpt-audit audit --format-hint``) instead of detection.
        d_model: override d_model (else: config, then the final norm's length).
        convention: force ``direct``/``offset``/``none`` for every gain instead of detecting it
            from the config.
        expect_init: a step-0 check: fail every gain whose ‖γ_eff‖₂ differs from √n by
            ``policy.init_tolerance`` or more.
        device: ``cpu``, ``cuda`` or ``auto`` (the CPU) for the statistics.

    Returns:
        An :class:`~ckpt_audit.records.AuditReport` (frozen; ``report.verdict`` is a
        :class:`~ckpt_audit.records.Verdict`). Every figure is defined in docs/METRICS.md.

    Raises:
        CkptAuditError: the input cannot be read right (its subclasses ``DetectionError``,
            ``FormatError``, ``RemoteError``, ``UnsafePickleError``, ``PolicyError``), with the
            file it is about; never a partial report.
    """
    with gc_paused(), open_checkpoint(path, format_hint) as reader:
        return audit_reader(reader, policy=policy, d_model=d_model, convention=convention,
                            expect_init=expect_init, device=device)


@contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector for one audit.

    A large checkpoint's headers are ~10^5 small dicts, held until the reader closes. They are
    trees, freed by reference counting when the reader goes; the collector's repeated passes over
    them while they live are pure overhead (measured: a third of a DeepSeek-V3-shaped audit).
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
