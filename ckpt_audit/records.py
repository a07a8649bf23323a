"""The data model: frozen dataclasses shared by readers, the analysis core and the renderers."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable
from dataclasses import MISSING, FrozenInstanceError, dataclass, field, fields
from enum import Enum
from typing import Any, TypeVar

if sys.version_info >= (3, 11):
    from typing import dataclass_transform
else:  # pragma: no cover - Python 3.10
    from typing_extensions import dataclass_transform

_T = TypeVar("_T")


@dataclass_transform(frozen_default=True, field_specifiers=(field,))
def frozen(cls: type[_T]) -> type[_T]:
    """``@dataclass(frozen=True)``, with one small compile instead of six.

    Design note: Python 3.11 compiles every method a frozen dataclass gets (``__init__``,
    ``__repr__``, ``__eq__``, ``__hash__``, ``__setattr__``, ``__delattr__``) with an ``exec`` of
    its own, ~1.5 ms a class: ~45 ms of every command's start-up for the 31 an audit imports.
    Here ``dataclass`` only collects the fields (so ``fields``, ``replace``, ``asdict`` and
    ``is_dataclass`` work as ever), ``__init__`` is compiled as ``dataclass`` writes it, and the
    other five are shared functions that read the class's field names: the same results, a few
    microseconds slower a call, where none of them is on a hot path. Fields may have a default
    or a ``default_factory`` and ``repr``/``compare``/``hash`` flags; anything else
    (``init=False``, ``kw_only``, ``__post_init__``) is refused here rather than half supported.
    ``tests/test_records.py`` holds it to ``dataclass``'s behaviour. A record must have a
    docstring: ``dataclass`` makes one for a class without, with ``inspect.signature``, whose
    first call costs a few milliseconds of start-up."""
    if not cls.__doc__ and sys.flags.optimize < 2:  # ``python -OO`` strips every docstring
        raise TypeError(f"{cls.__name__}: a @frozen record needs a docstring")
    built: Any = dataclass(init=False, repr=False, eq=False)(cls)
    flds = fields(built)
    if hasattr(cls, "__post_init__") or any(not f.init or f.kw_only is True for f in flds):
        raise TypeError(f"{cls.__name__}: @frozen supports plain fields only")
    params: list[str] = []
    body: list[str] = []
    env: dict[str, Any] = {"_set": object.__setattr__, "_NO": MISSING}
    for f in flds:
        if f.default is not MISSING:
            env[f"_d_{f.name}"] = f.default
            params.append(f"{f.name}=_d_{f.name}")
        elif f.default_factory is not MISSING:
            env[f"_f_{f.name}"] = f.default_factory
            params.append(f"{f.name}=_NO")
            body.append(f" if {f.name} is _NO: {f.name} = _f_{f.name}()")
        else:
            params.append(f.name)
        body.append(f" _set(self, {f.name!r}, {f.name})")
    signature = ", ".join(["self", *params])
    source = "\n".join([f"def __init__({signature}):", *(body or [" pass"])])
    exec(source, env)  # noqa: S102 - our own text, built from the field names
    init: Callable[..., None] = env["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    owner: Any = cls  # a class being built: its methods are set below
    owner.__init__ = init
    owner._record = (cls, frozenset(f.name for f in flds),
                     tuple(f.name for f in flds if f.repr),
                     tuple(f.name for f in flds if f.compare),
                     tuple(f.name for f in flds if (f.compare if f.hash is None else f.hash)))
    for name, fn in _RECORD_METHODS.items():
        setattr(owner, name, fn)
    return cls


def _record_repr(self: Any) -> str:
    shown = ", ".join(f"{n}={getattr(self, n)!r}" for n in self._record[2])
    return f"{self.__class__.__qualname__}({shown})"


def _record_eq(self: Any, other: Any) -> Any:
    if other.__class__ is self.__class__:
        names = self._record[3]
        return tuple(getattr(self, n) for n in names) == tuple(getattr(other, n) for n in names)
    return NotImplemented


def _record_hash(self: Any) -> int:
    return hash(tuple(getattr(self, n) for n in self._record[4]))


def _record_setattr(self: Any, name: str, value: Any) -> None:
    owner, names = self._record[0], self._record[1]
    if type(self) is owner or name in names:
        raise FrozenInstanceError(f"cannot assign to field {name!r}")
    super(owner, self).__setattr__(name, value)


def _record_delattr(self: Any, name: str) -> None:
    owner, names = self._record[0], self._record[1]
    if type(self) is owner or name in names:
        raise FrozenInstanceError(f"cannot delete field {name!r}")
    super(owner, self).__delattr__(name)


_RECORD_METHODS: dict[str, Callable[..., Any]] = {
    "__repr__": _record_repr, "__eq__": _record_eq, "__hash__": _record_hash,
    "__setattr__": _record_setattr, "__delattr__": _record_delattr,
}


@frozen
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


@frozen
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


@frozen
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
    #: ‖γ_eff,REF‖₂ of the same-named gain of ``--reference``; then ``stats.ratio`` is
    #: ``stats.norm / reference_norm`` instead of ``stats.norm / √dim``.
    reference_norm: float | None = None


@frozen
class SkippedTensor:
    """A tensor whose name says norm but that the audit did not audit, and why (docs/METRICS.md
    "skipped"): nothing that looks like a gain disappears without a word."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    reason: str


@frozen
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


@frozen
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
    skipped: tuple[SkippedTensor, ...] = ()
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
