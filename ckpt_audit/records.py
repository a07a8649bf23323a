"""The data model: frozen dataclasses shared by readers, the analysis core and the renderers."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any


@dataclass(frozen=True)
class TensorInfo:
    """What a reader knows about one tensor without reading it.

    ``dtype`` uses safetensors spelling (``F32``, ``BF16``, ``F16``, ``F64``, ``F8_E4M3``,
    ``F8_E5M2``, ``I64``...); ``source`` is the file (or URL) that holds the bytes.
    """

    name: str
    shape: tuple[int, ...]
    dtype: str
    source: str

    @property
    def numel(self) -> int:
        n = 1
        for s in self.shape:
            n *= s
        return n

    @property
    def is_float(self) -> bool:
        return self.dtype.startswith(("F", "BF"))


class Role(str, Enum):
    """Where a gain sits in the model (see docs/POLICY.md)."""

    FINAL = "final"
    LAYER = "layer"
    QK = "qk"
    LATENT = "latent"
    MTP = "mtp"
    EMBEDDING = "embedding"
    OTHER = "other"


class Convention(str, Enum):
    """How a gain is stored: ``direct`` γ_eff = w; ``offset`` γ_eff = 1 + w; ``none``: no gain."""

    DIRECT = "direct"
    OFFSET = "offset"
    NONE = "none"


class Status(str, Enum):
    """The ladder of ratio bands, plus non-finite. Ordered from small to large ratio."""

    COLLAPSE = "collapse"
    LOW = "low"
    SHRINK = "shrink"
    NOMINAL = "nominal"
    GROWTH = "growth"
    EXPLOSION = "explosion"
    NONFINITE = "nonfinite"


class Severity(str, Enum):
    """How much a finding matters. ``ok`` < ``info`` < ``warn`` < ``fail``."""

    OK = "ok"
    INFO = "info"
    WARN = "warn"
    FAIL = "fail"

    @property
    def rank(self) -> int:
        return _SEVERITY_RANK[self]


_SEVERITY_RANK = {Severity.OK: 0, Severity.INFO: 1, Severity.WARN: 2, Severity.FAIL: 3}


@dataclass(frozen=True)
class GainStats:
    """Statistics of one effective gain γ_eff, all computed in float64.

    ``norm`` = ‖γ_eff‖₂; ``ratio`` = norm / √dim (= RMS of γ_eff); ``near_zero`` is the fraction
    of channels with |γ_eff| below the policy's ``near_zero`` threshold; ``extreme`` lists the
    channels farthest from the init value 1 as ``(index, value)``. Non-finite channels are counted
    in ``nonfinite`` and make ``norm``/``ratio`` non-finite. ``spread`` = std / RMS of the finite
    channels (0 for an all-equal gain, such as the all-ones init) and ``negative`` the fraction of
    channels with γ_eff < 0 (channel signals, docs/METRICS.md); NaN when not computed.
    """

    dim: int
    norm: float
    ratio: float
    min: float
    max: float
    mean: float
    std: float
    nonfinite: int
    near_zero: float
    extreme: tuple[tuple[int, float], ...]
    spread: float = float("nan")
    negative: float = float("nan")


@dataclass(frozen=True)
class NormRecord:
    """One audited gain: where it is, how it is stored, its statistics and its classification."""

    name: str
    role: Role
    layer: int | None
    dtype: str
    convention: Convention
    stats: GainStats
    status: Status
    severity: Severity


@dataclass(frozen=True)
class Finding:
    """Something the audit wants a human (or a CI gate) to see."""

    severity: Severity
    code: str
    tensor: str | None
    message: str


class Verdict(str, Enum):
    """The outcome of one audit (``pass``/``warn``/``fail``) or of one run checkpoint, which may
    also be ``incomplete`` (not audited) or ``error`` (the audit refused). Ordered best to worst by
    :attr:`rank`; ``incomplete``, ``fail`` and ``error`` never pass."""

    PASS = "pass"
    WARN = "warn"
    INCOMPLETE = "incomplete"
    FAIL = "fail"
    ERROR = "error"

    def __str__(self) -> str:
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)

    @property
    def rank(self) -> int:
        return _VERDICT_RANK[self]

    @classmethod
    def worst(cls, verdicts: Iterable[Verdict]) -> Verdict:
        """The worst of several verdicts (``pass`` for none)."""
        return max(verdicts, key=lambda v: v.rank, default=cls.PASS)


_VERDICT_RANK = {Verdict.PASS: 0, Verdict.WARN: 1, Verdict.INCOMPLETE: 2, Verdict.FAIL: 3,
                 Verdict.ERROR: 3}


def verdict_of(findings: Iterable[Finding]) -> Verdict:
    """``fail`` if any finding fails, ``warn`` if any warns, else ``pass``."""
    worst = max((f.severity.rank for f in findings), default=0)
    if worst >= Severity.FAIL.rank:
        return Verdict.FAIL
    if worst >= Severity.WARN.rank:
        return Verdict.WARN
    return Verdict.PASS


@dataclass(frozen=True)
class AuditReport:
    """The result of auditing one checkpoint. Renderers are pure functions of this object."""

    checkpoint: str
    format: str
    d_model: int | None
    d_model_source: str
    convention: Convention
    norms: tuple[NormRecord, ...]
    findings: tuple[Finding, ...]
    policy_name: str
    bytes_read: int = 0
    tensors_total: int = 0
    extra: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @property
    def verdict(self) -> Verdict:
        """``fail`` if any finding fails, ``warn`` if any warns, else ``pass``."""
        return verdict_of(self.findings)

    @property
    def final(self) -> NormRecord | None:
        """The main model's final norm, if the checkpoint has one."""
        for rec in self.norms:
            if rec.role is Role.FINAL:
                return rec
        return None
