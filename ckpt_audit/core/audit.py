"""The audit: reader → discovery → statistics → policy → findings → :class:`AuditReport`.

Pure orchestration over the pieces in :mod:`discovery`, :mod:`stats` and :mod:`policy`; it reads
only the gains' bytes (one batched ``read_many``) and never writes anything anywhere.
"""

from __future__ import annotations

import gc
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

import numpy as np

from ckpt_audit.core.conventions import (
    convention_for,
    convention_from_names,
    resolve_convention,
)
from ckpt_audit.core.discovery import Candidate, Discovery, discover
from ckpt_audit.core.layouts import ENCODER_MODEL_TYPES, d_model_from_config, model_type
from ckpt_audit.core.policy import Policy, load_policy
from ckpt_audit.core.reference import INIT, Reference, from_norms
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
    if rec.reference_norm is not None:
        return (f"‖γ‖₂ = {_fmt(s.norm)} is {s.ratio:.3f}× the reference's "
                f"‖γ_REF‖₂ = {_fmt(rec.reference_norm)}: {rec.status.value} ({band})")
    return (f"‖γ‖₂ = {_fmt(s.norm)} is {s.ratio:.3f}×√{s.dim} "
            f"(√{s.dim} = {math.sqrt(s.dim):.4g}): {rec.status.value} ({band})")


def against_reference(name: str, st: GainStats, reference: Reference
                      ) -> tuple[GainStats, float | None, Finding | None]:
    """The gain's statistics with ``ratio`` = ‖γ_eff‖₂ / ‖γ_eff,REF‖₂, the reference norm, and a
    finding when the reference has no usable same-named gain (the ratio then stays norm/√n)."""
    if reference.is_init:
        return st, None, None
    ref = reference.lookup(name)
    if ref is None:
        return st, None, Finding(
            Severity.WARN, "reference-missing", name,
            f"no gain of this name in the reference {reference.path}: its ratio is to √{st.dim} "
            "(the all-ones init) instead")
    ref_norm, ref_dim = ref
    if ref_dim != st.dim or not (math.isfinite(ref_norm) and ref_norm > 0):
        why = (f"has length {ref_dim}, this gain {st.dim}" if ref_dim != st.dim
               else f"has ‖γ_REF‖₂ = {_fmt(ref_norm)}")
        return st, None, Finding(
            Severity.FAIL, "reference-mismatch", name,
            f"the same-named gain in the reference {reference.path} {why}: no ratio to it")
    return replace(st, ratio=st.norm / ref_norm), ref_norm, None


def resolve_d_model(
    override: int | None, cfg: dict[str, Any], final_dim: int | None, source: str = "config"
) -> tuple[int | None, str]:
    """d_model and where it came from: ``--d-model`` > config > final norm's length.

    ``source`` names what the trainer wrote (``config.json``, ``model_args``, ``params.json``,
    ``megatron args``, ``gguf metadata``, ``llama2c header``): the report says e.g.
    ``model_args n_embd``."""
    if override is not None:
        return override, "--d-model"
    val, key = d_model_from_config(cfg)
    if val is not None:
        return val, f"{source} {key}"
    if final_dim is not None:
        return final_dim, "final norm length"
    return None, "unknown"


def _stats_for(values: dict[str, np.ndarray], convs: dict[str, Convention], near_zero: float,
               device: str) -> dict[str, GainStats]:
    if device == "cuda":
        from ckpt_audit.core.stats_torch import gain_stats_torch

        return gain_stats_torch(values, convs, near_zero, "cuda")
    return gain_stats_many(values, convs, near_zero)


def gain_values(reader: CheckpointReader, gains: tuple[Candidate, ...]) -> dict[str, np.ndarray]:
    """Every gain's stored values in one batched read; quantized gains dequantized
    (values × scale, broadcast, in float64: docs/METRICS.md "quantized gains")."""
    raw = reader.read_many([n for c in gains for n in c.reads])
    out: dict[str, np.ndarray] = {}
    for c in gains:
        if c.quant is None:
            out[c.name] = raw[c.name]
        else:
            v = np.asarray(raw[c.quant.values], dtype=np.float64).reshape(-1)
            sc = np.asarray(raw[c.quant.scale], dtype=np.float64).reshape(-1)
            out[c.name] = v * sc
    return out


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
    reference: Reference = INIT,
) -> AuditReport:
    """Audit an open checkpoint. See docs/METRICS.md for every figure's definition."""
    policy = policy or load_policy()
    device = pick_device(device)
    tensors = reader.tensors()
    cfg = reader.config()
    disc: Discovery = discover(tensors, cfg)
    default_conv, conv_why = resolve_convention(cfg, convention, reader.convention_hint)
    findings: list[Finding] = list(disc.findings)
    if conv_why == "default":  # nothing (config, format, --convention) says: ask the names
        inferred = convention_from_names([c.name for c in disc.gains])
        if inferred is not None:
            default_conv, conv_why = inferred
            findings.append(Finding(
                Severity.INFO, "convention-inferred", None,
                f"gains read as {default_conv.value} (γ_eff = 1 + w): {conv_why}; no config "
                "says so: add config.json or pass --convention to settle it"))
    records: list[NormRecord] = []
    if default_conv is Convention.NONE and convention is None and disc.gains:
        default_conv, conv_why = Convention.DIRECT, "gains found despite a gain-less model type"
    if default_conv is not Convention.NONE:
        convs = {c.name: convention_for(c.name, default_conv, cfg, convention is not None)
                 for c in disc.gains}
        values = gain_values(reader, disc.gains)
        stats = _stats_for(values, convs, policy.near_zero, device)
        ref_policy = policy.for_reference()
        for c in disc.gains:
            st, ref_norm, ref_finding = against_reference(c.name, stats[c.name], reference)
            if ref_finding is not None:
                findings.append(ref_finding)
            status, severity = (ref_policy if ref_norm is not None else policy).classify(
                st.ratio, c.role)
            dtype = c.quant.dtype if c.quant else tensors[c.name].dtype
            rec = NormRecord(c.name, c.role, c.layer, dtype, convs[c.name], st,
                             status, severity, ref_norm)
            records.append(rec)
            if severity is not Severity.OK:
                findings.append(Finding(severity, status.value, c.name, band_message(
                    rec, ref_policy if ref_norm is not None else policy)))
            if expect_init and not (abs(st.norm - math.sqrt(st.dim)) < policy.init_tolerance):
                findings.append(Finding(
                    Severity.FAIL, "init-mismatch", c.name, init_message(st, policy)))
    # reader findings last: some (tensor-parallel replica checks) are made while reading
    findings = list(reader.findings) + findings
    final = next((r for r in records if r.role is Role.FINAL), None)
    dm, dm_source = resolve_d_model(d_model, cfg, final.stats.dim if final else None,
                                    reader.config_source)
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
        skipped=disc.skipped,
        extra={
            "convention_source": conv_why,
            "biases": len(disc.biases),
            "mtp_layout": disc.mtp_layout,
            "mtp_declared": disc.mtp_declared,
            "device": device,
            "reference": reference.to_json(),
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
    state_key: str | None = None,
    reference: Reference = INIT,
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
    with gc_paused(), open_checkpoint(path, format_hint, state_key) as reader:
        return audit_reader(reader, policy=policy, d_model=d_model, convention=convention,
                            expect_init=expect_init, device=device, reference=reference)


def load_reference(path: str | Location, *, format_hint: str | None = None,
                   convention: Convention | None = None, state_key: str | None = None
                   ) -> Reference:
    """A reference checkpoint (any the tool reads, local or remote): its gains' γ_eff norms,
    under the same discovery and conventions as an audit."""
    rep = audit_checkpoint(path, format_hint=format_hint, convention=convention,
                           state_key=state_key)
    if not rep.norms:
        raise CkptAuditError("the reference checkpoint has no gains to compare with",
                             rep.checkpoint)
    return from_norms(rep.checkpoint, {r.name: (r.stats.norm, r.stats.dim) for r in rep.norms})


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
