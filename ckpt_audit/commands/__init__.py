"""CLI commands: one module per command, each exposing ``register(app: typer.Typer)``.

Modules are discovered by :mod:`ckpt_audit.cli`; heavy imports (torch, transformers, matplotlib)
belong inside the command function, never at module top level, so ``ckpt-audit audit`` on
safetensors starts fast.
"""
