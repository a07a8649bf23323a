"""Checkpoint readers: one module per format behind one interface, ``CheckpointReader``.

:func:`open_checkpoint` detects the format (never guessing silently) or takes ``format_hint``.
The registry in :mod:`ckpt_audit.readers.registry` lists the formats in detection order.
"""

from ckpt_audit.readers.base import CheckpointReader
from ckpt_audit.readers.registry import available_formats, open_checkpoint

__all__ = ["CheckpointReader", "available_formats", "open_checkpoint"]
