"""What a ratio is measured against: the all-ones init (√n, the article's identity) or the
same-named gain of a reference checkpoint (a fine-tune's base model, a run's first step).

ratio = ‖γ_eff‖₂ / ‖γ_eff,REF‖₂ in reference mode (docs/METRICS.md "reference"); names are matched
after the wrapper prefixes (``model.``, ``module.``, ``_orig_mod.``) are removed, so a Hugging
Face folder and a Meta or nanoGPT file of the same model match.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import field
from typing import Any

from ckpt_audit.core.layouts import WRAPPER_PREFIXES
from ckpt_audit.records import frozen


@frozen
class Reference:
    """``kind`` ``init`` (no checkpoint: ratio = norm/√n) or ``checkpoint`` (``path`` and each
    gain's ``(‖γ_eff,REF‖₂, length)`` by matching key)."""

    kind: str = "init"
    path: str | None = None
    gains: Mapping[str, tuple[float, int]] = field(default_factory=dict, compare=False)

    def to_json(self) -> dict[str, Any]:
        """The report's top-level ``reference`` object."""
        return {"kind": self.kind} if self.kind == "init" else {"kind": self.kind,
                                                                 "path": self.path}

    @property
    def is_init(self) -> bool:
        return self.kind == "init"

    def lookup(self, name: str) -> tuple[float, int] | None:
        """The reference gain for ``name``, matched after prefix stripping."""
        return self.gains.get(match_key(name))


INIT = Reference()


def match_key(name: str) -> str:
    """``name`` without leading wrapper prefixes: the key gains are matched by."""
    while name.startswith(WRAPPER_PREFIXES):
        name = name.split(".", 1)[1]
    return name


def from_norms(path: str, norms: Mapping[str, tuple[float, int]]) -> Reference:
    """A checkpoint reference from its gains' ``{name: (‖γ_eff‖₂, length)}``."""
    return Reference("checkpoint", path, {match_key(n): v for n, v in norms.items()})
