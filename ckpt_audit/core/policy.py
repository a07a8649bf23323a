"""The policy: ratio bands resolved into one ladder of statuses, and a severity per role.

The shipped default (``data/default_policy.toml``, identical to
``sample_configs/article-default.toml``) ties each number to the article's sentence. A user file
is layered over the default (``extends = "none"`` starts from nothing), can override the bands
per role (``[roles.final.bands]``), and the severities per role (``[severity.<role>]``, with
``[severity.default]`` for roles it doesn't name). Non-finite gains always fail.
"""

from __future__ import annotations

import math
import sys
from dataclasses import field, replace
from pathlib import Path
from typing import Any

from ckpt_audit.errors import PolicyError
from ckpt_audit.records import Role, Severity, Status, frozen

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

BAND_KEYS = ("collapse", "low", "shrink", "nominal", "growth")


@frozen
class Bands:
    """Upper edges of the ladder, as ratios r = ‖γ_eff‖₂/√n.

    collapse: r < collapse; low: collapse ≤ r < low; shrink: low ≤ r < shrink;
    nominal: shrink ≤ r ≤ nominal; growth: nominal < r ≤ growth; explosion: r > growth.
    """

    collapse: float = 0.4
    low: float = 0.5
    shrink: float = 0.9
    nominal: float = 1.12
    growth: float = 1.8

    def classify(self, ratio: float) -> Status:
        """The status of ``ratio`` on this ladder (non-finite → ``nonfinite``)."""
        if not math.isfinite(ratio):
            return Status.NONFINITE
        if ratio < self.collapse:
            return Status.COLLAPSE
        if ratio < self.low:
            return Status.LOW
        if ratio < self.shrink:
            return Status.SHRINK
        if ratio <= self.nominal:
            return Status.NOMINAL
        if ratio <= self.growth:
            return Status.GROWTH
        return Status.EXPLOSION

    def ranges(self) -> dict[Status, tuple[float | None, float | None]]:
        """Each status's ``[lo, hi]`` ratio range; ``None`` is an open end."""
        return {
            Status.COLLAPSE: (None, self.collapse),
            Status.LOW: (self.collapse, self.low),
            Status.SHRINK: (self.low, self.shrink),
            Status.NOMINAL: (self.shrink, self.nominal),
            Status.GROWTH: (self.nominal, self.growth),
            Status.EXPLOSION: (self.growth, None),
        }

    def describe(self, status: Status) -> str:
        """The inequality :meth:`classify` applies for ``status`` (``0.4 ≤ r < 0.5`` for low)."""
        c, lo, sh, no, gr = self.collapse, self.low, self.shrink, self.nominal, self.growth
        return {Status.COLLAPSE: f"r < {c:g}", Status.LOW: f"{c:g} ≤ r < {lo:g}",
                Status.SHRINK: f"{lo:g} ≤ r < {sh:g}", Status.NOMINAL: f"{sh:g} ≤ r ≤ {no:g}",
                Status.GROWTH: f"{no:g} < r ≤ {gr:g}", Status.EXPLOSION: f"r > {gr:g}",
                Status.NONFINITE: "non-finite"}[status]

    @property
    def healthy(self) -> tuple[float, float]:
        """The article's "healthy range": ``[collapse, growth]`` (= [0.4, 1.8] by default)."""
        return (self.collapse, self.growth)


#: ``[signals]`` keys of the policy file, each a non-negative number (docs/SIGNALS.md).
SIGNAL_KEYS = ("late_step", "far_from_init", "jump", "rate_warn", "rate_fail", "layer_rate_warn",
               "layer_rate_fail", "together_median", "together_share", "together_spread",
               "spread_rate_warn", "spread_rate_fail", "negative_warn", "negative_fail")


@frozen
class SignalPolicy:
    """Thresholds of the run signals (``[signals]``; defaults = ``data/default_policy.toml``).

    Rates are changes of a gain's ratio relative to the reference (the known start: 1) per 100
    optimizer steps; see docs/SIGNALS.md for every definition. A test checks these defaults equal
    the shipped file's.
    """

    late_step: float = 1000
    far_from_init: float = 0.25
    jump: float = 0.30
    rate_warn: float = 0.25
    rate_fail: float = 0.5
    layer_rate_warn: float = 0.03
    layer_rate_fail: float = 0.5
    together_median: float = 0.95
    together_share: float = 0.9
    together_spread: float = 0.05
    spread_rate_warn: float = 0.1
    spread_rate_fail: float = 0.3
    negative_warn: float = 0.05
    negative_fail: float = 0.2


def _numbers(obj: Any, keys: tuple[str, ...], where: str, what: str) -> dict[str, float]:
    """The non-negative numbers of a table whose keys must be among ``keys``."""
    if not isinstance(obj, dict):
        raise PolicyError(f"{where} must be a table")
    vals: dict[str, float] = {}
    for k, v in obj.items():
        if k not in keys:
            raise PolicyError(f"{where}: unknown {what} {k!r} (known: {', '.join(keys)})")
        if not isinstance(v, int | float) or isinstance(v, bool) or not math.isfinite(v) or v < 0:
            raise PolicyError(f"{where}.{k} must be a non-negative number, not {v!r}")
        vals[k] = float(v)
    return vals


def _signals(obj: Any) -> SignalPolicy:
    sp = SignalPolicy(**_numbers(obj, SIGNAL_KEYS, "signals", "key"))
    for lo, hi in (("rate_warn", "rate_fail"), ("layer_rate_warn", "layer_rate_fail"),
                   ("spread_rate_warn", "spread_rate_fail"), ("negative_warn", "negative_fail")):
        if getattr(sp, lo) > getattr(sp, hi):
            raise PolicyError(f"signals: {lo} ({getattr(sp, lo)}) is above {hi} "
                              f"({getattr(sp, hi)})")
    return sp


@frozen
class Policy:
    """A resolved policy. :meth:`classify` is the one place a ratio becomes a verdict."""

    name: str
    source: str
    near_zero: float
    init_tolerance: float
    bands: Bands
    role_bands: dict[Role, Bands] = field(default_factory=dict)
    severity: dict[str, dict[Status, Severity]] = field(default_factory=dict)
    signals: SignalPolicy = field(default_factory=SignalPolicy)
    raw: dict[str, Any] = field(default_factory=dict, compare=False)
    #: ``[reference.bands]`` / ``[reference.roles.<role>.bands]``: the ladder for ratios to a
    #: reference checkpoint (``--reference``), when the policy gives one.
    reference_bands: Bands | None = None
    reference_role_bands: dict[Role, Bands] = field(default_factory=dict)

    def for_reference(self) -> Policy:
        """This policy as it applies to ratios against a reference checkpoint: its reference-mode
        bands when it has any, else the same bands."""
        if self.reference_bands is None and not self.reference_role_bands:
            return self
        return replace(self, bands=self.reference_bands or self.bands,
                       role_bands=dict(self.reference_role_bands))

    def bands_for(self, role: Role) -> Bands:
        """The ladder for one role (the role's override, else the global bands)."""
        return self.role_bands.get(role, self.bands)

    def severity_for(self, role: Role, status: Status) -> Severity:
        """How much ``status`` matters for ``role``; non-finite always fails."""
        if status is Status.NONFINITE:
            return Severity.FAIL
        table = self.severity.get(role.value) or self.severity.get("default") or {}
        return table.get(status, Severity.OK)

    def classify(self, ratio: float, role: Role) -> tuple[Status, Severity]:
        """``(status, severity)`` of a gain with ``ratio`` in ``role``."""
        status = self.bands_for(role).classify(ratio)
        return status, self.severity_for(role, status)


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


def _bands(obj: Any, base: Bands, where: str) -> Bands:
    vals = {k: getattr(base, k) for k in BAND_KEYS}
    vals.update(_numbers(obj, BAND_KEYS, where, "band"))
    edges = [vals[k] for k in BAND_KEYS]
    if edges != sorted(edges):
        raise PolicyError(f"{where}: edges must increase: " + ", ".join(
            f"{k}={vals[k]}" for k in BAND_KEYS))
    return Bands(**vals)


def _severities(obj: Any, where: str) -> dict[Status, Severity]:
    if not isinstance(obj, dict):
        raise PolicyError(f"{where} must be a table")
    out: dict[Status, Severity] = {}
    for k, v in obj.items():
        try:
            status = Status(k)
        except ValueError:
            raise PolicyError(f"{where}: unknown status {k!r}") from None
        try:
            out[status] = Severity(v)
        except ValueError:
            raise PolicyError(
                f"{where}.{k}: severity must be ok|info|warn|fail, not {v!r}") from None
    return out


def _role_bands(roles: Any, base: Bands, where: str) -> dict[Role, Bands]:
    """``[<where>.<role>.bands]`` tables, each layered over ``base``."""
    out: dict[Role, Bands] = {}
    for role_name, table in roles.items():
        try:
            role = Role(role_name)
        except ValueError:
            raise PolicyError(f"{where}: unknown role {role_name!r}") from None
        if isinstance(table, dict) and "bands" in table:
            out[role] = _bands(table["bands"], base, f"{where}.{role_name}.bands")
    return out


def policy_from_dict(data: dict[str, Any], source: str) -> Policy:
    """Build a :class:`Policy` from parsed TOML, validating every field."""
    try:
        bands = _bands(data.get("bands", {}), Bands(), "bands")
        role_bands = _role_bands(data.get("roles") or {}, bands, "roles")
        severity: dict[str, dict[Status, Severity]] = {}
        for key, table in (data.get("severity") or {}).items():
            if key != "default" and key not in {r.value for r in Role}:
                raise PolicyError(f"severity: unknown role {key!r}")
            severity[key] = _severities(table, f"severity.{key}")
        ref = data.get("reference") or {}
        if not isinstance(ref, dict):
            raise PolicyError("reference must be a table")
        ref_bands = _bands(ref["bands"], bands, "reference.bands") if "bands" in ref else None
        ref_role_bands = _role_bands(ref.get("roles") or {}, ref_bands or bands,
                                     "reference.roles")
        signals = _signals(data.get("signals", {}))
        near_zero = float(data.get("near_zero", 0.01))
        init_tol = float(data.get("init_tolerance", 0.01))
    except PolicyError as exc:
        raise PolicyError(exc.message, source) from None
    except (TypeError, ValueError) as exc:
        raise PolicyError(f"bad value ({exc})", source) from None
    return Policy(str(data.get("name", Path(source).stem)), source, near_zero, init_tol, bands,
                  role_bands, severity, signals, data, reference_bands=ref_bands,
                  reference_role_bands=ref_role_bands)


#: The shipped default policy, beside the package's modules (read as a plain file: an installed
#: package is on disk; ``importlib.resources`` would cost every command ~5 ms of imports).
DEFAULT_POLICY_FILE = Path(__file__).resolve().parent.parent / "data" / "default_policy.toml"


def default_policy_text() -> str:
    """The shipped default policy file's text."""
    return DEFAULT_POLICY_FILE.read_text("utf-8")


def load_policy(path: str | Path | None = None) -> Policy:
    """The default policy, or a user's TOML file layered over it."""
    default = tomllib.loads(default_policy_text())
    if path is None:
        return policy_from_dict(default, "default")
    p = Path(path)
    try:
        text = p.read_text("utf-8")
    except OSError as exc:
        raise PolicyError(f"cannot read policy ({exc.strerror})", str(p)) from None
    try:
        user = tomllib.loads(text)
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise PolicyError(f"not valid TOML ({exc})", str(p)) from None
    base = {} if user.get("extends") == "none" else default
    return policy_from_dict(_merge(base, user), str(p))
