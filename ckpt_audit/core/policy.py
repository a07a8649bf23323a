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
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from ckpt_audit.errors import PolicyError
from ckpt_audit.records import Role, Severity, Status

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

BAND_KEYS = ("collapse", "low", "shrink", "nominal", "growth")


@dataclass(frozen=True)
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

    @property
    def healthy(self) -> tuple[float, float]:
        """The article's "healthy range": ``[collapse, growth]`` (= [0.4, 1.8] by default)."""
        return (self.collapse, self.growth)


@dataclass(frozen=True)
class Policy:
    """A resolved policy. :meth:`classify` is the one place a ratio becomes a verdict."""

    name: str
    source: str
    near_zero: float
    init_tolerance: float
    bands: Bands
    role_bands: dict[Role, Bands] = field(default_factory=dict)
    severity: dict[str, dict[Status, Severity]] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict, compare=False)

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
    if not isinstance(obj, dict):
        raise PolicyError(f"{where} must be a table")
    vals = {k: getattr(base, k) for k in BAND_KEYS}
    for k, v in obj.items():
        if k not in BAND_KEYS:
            raise PolicyError(f"{where}: unknown band {k!r} (known: {', '.join(BAND_KEYS)})")
        if not isinstance(v, int | float) or isinstance(v, bool) or not math.isfinite(v) or v < 0:
            raise PolicyError(f"{where}.{k} must be a non-negative number, not {v!r}")
        vals[k] = float(v)
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


def policy_from_dict(data: dict[str, Any], source: str) -> Policy:
    """Build a :class:`Policy` from parsed TOML, validating every field."""
    try:
        bands = _bands(data.get("bands", {}), Bands(), "bands")
        role_bands: dict[Role, Bands] = {}
        for role_name, table in (data.get("roles") or {}).items():
            try:
                role = Role(role_name)
            except ValueError:
                raise PolicyError(f"roles: unknown role {role_name!r}") from None
            if isinstance(table, dict) and "bands" in table:
                role_bands[role] = _bands(table["bands"], bands, f"roles.{role_name}.bands")
        severity: dict[str, dict[Status, Severity]] = {}
        for key, table in (data.get("severity") or {}).items():
            if key != "default" and key not in {r.value for r in Role}:
                raise PolicyError(f"severity: unknown role {key!r}")
            severity[key] = _severities(table, f"severity.{key}")
        near_zero = float(data.get("near_zero", 0.01))
        init_tol = float(data.get("init_tolerance", 0.01))
    except PolicyError as exc:
        raise PolicyError(exc.message, source) from None
    except (TypeError, ValueError) as exc:
        raise PolicyError(f"bad value ({exc})", source) from None
    return Policy(str(data.get("name", Path(source).stem)), source, near_zero, init_tol, bands,
                  role_bands, severity, data)


def default_policy_text() -> str:
    """The shipped default policy file's text."""
    return resources.files("ckpt_audit").joinpath("data/default_policy.toml").read_text("utf-8")


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
