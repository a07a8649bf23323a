"""ckpt-audit: audit LLM training checkpoints without loading them.

The public surface is small on purpose:

- :func:`ckpt_audit.core.audit.audit_checkpoint` returns an
:class:`~ckpt_audit.records.AuditReport`;
- :func:`ckpt_audit.readers.open_checkpoint` opens any supported layout lazily;
- :func:`ckpt_audit.core.policy.load_policy` loads a TOML policy.
"""

__version__ = "0.1.0"
