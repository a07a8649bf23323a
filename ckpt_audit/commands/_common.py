"""Helpers shared by command modules: writing output safely and picking a console."""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

from ckpt_audit.errors import CkptAuditError

if TYPE_CHECKING:
    from rich.console import Console


def refuse_inside(output: str, checkpoint: str) -> None:
    """Never write into a checkpoint folder: refuse an ``--output`` path inside it."""
    if "://" in checkpoint:
        return
    ck = os.path.realpath(checkpoint)
    if not os.path.isdir(ck):
        ck = os.path.dirname(ck)
    out = os.path.realpath(output)
    if out == ck or out.startswith(ck.rstrip(os.sep) + os.sep):
        raise CkptAuditError(f"refusing to write inside {checkpoint} (ckpt-audit never writes "
                             "where checkpoints live); choose another path", output)


def emit(text: str, output: str | None, checkpoints: list[str]) -> None:
    """Write ``text`` to ``output`` (checked) or stdout."""
    if output:
        for ck in checkpoints:
            refuse_inside(output, ck)
        try:
            with open(output, "w", encoding="utf-8") as fh:
                fh.write(text)
        except OSError as exc:
            raise CkptAuditError(f"cannot write output ({exc.strerror})", output) from None
    else:
        sys.stdout.write(text)


def console(width: int | None = None) -> Console:
    """A stdout console; ``COLUMNS``/``--width`` pin the width (rich is imported here, so a JSON
    audit never loads it)."""
    from rich.console import Console

    return Console(width=width, soft_wrap=False)
