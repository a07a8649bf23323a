"""ckpt-audit: audit LLM training checkpoints without loading them.

The public surface is small on purpose, importable from here (lazily: ``import ckpt_audit``
stays cheap):

- :func:`audit_checkpoint` (:mod:`ckpt_audit.core.audit`) returns an
  :class:`~ckpt_audit.records.AuditReport`;
- :func:`open_checkpoint` (:mod:`ckpt_audit.readers`) opens any supported layout lazily; close
  the reader (``with open_checkpoint(path) as reader: ...``);
- :func:`load_policy` (:mod:`ckpt_audit.core.policy`) loads a TOML policy.

Every input problem is a :class:`~ckpt_audit.errors.CkptAuditError` naming the file.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from ckpt_audit.core.audit import audit_checkpoint
    from ckpt_audit.core.policy import load_policy
    from ckpt_audit.readers import open_checkpoint

_LAZY = {"audit_checkpoint": "ckpt_audit.core.audit", "load_policy": "ckpt_audit.core.policy",
         "open_checkpoint": "ckpt_audit.readers"}

__all__ = ["__version__", "audit_checkpoint", "load_policy", "open_checkpoint"]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
