"""Which formats exist and in which order they are tried.

Detection order matters: the more specific layouts (Megatron, DCP, DeepSpeed run folders) come
before the generic ones (a folder of safetensors). Each entry is ``(format name, module, class)``,
imported lazily so that opening a safetensors file never imports torch or gguf.
"""

from __future__ import annotations

import importlib

from ckpt_audit.errors import DetectionError
from ckpt_audit.io import Location, location
from ckpt_audit.readers.base import CheckpointReader

#: (format name, module path, class name), in detection order.
READERS: list[tuple[str, str, str]] = [
    ("safetensors", "ckpt_audit.readers.safetensors_reader", "SafetensorsReader"),
    ("torch", "ckpt_audit.readers.torch_reader", "TorchReader"),
    # single files recognised by their first bytes (GGUF magic; llama2.c magic or a sane header
    # that matches the file size), after torch so that a zip named *.bin is never llama2.c
    ("gguf", "ckpt_audit.readers.gguf_reader", "GGUFReader"),
    ("llama2c", "ckpt_audit.readers.llama2c_reader", "Llama2cReader"),
]

#: What detection looks for, shown when nothing matched.
LOOKED_FOR = [
    "*.safetensors / model.safetensors.index.json",
    "pytorch_model.bin / *.pt / *.pth / pytorch_model.bin.index.json (torch zip pickles)",
    "a GGUF file (magic GGUF)",
    "a llama2.c model file (v1/v2 magic ak42, or a v0 header matching the file size)",
]


def available_formats() -> list[str]:
    """Names accepted by ``--format-hint``."""
    return [name for name, _, _ in READERS]


def reader_class(fmt: str) -> type[CheckpointReader]:
    """The reader class for one format name."""
    for name, module, cls in READERS:
        if name == fmt:
            return getattr(importlib.import_module(module), cls)  # type: ignore[no-any-return]
    raise DetectionError(
        f"unknown format {fmt!r}; known formats: {', '.join(available_formats())}"
    )


def open_checkpoint(path: str | Location, format_hint: str | None = None) -> CheckpointReader:
    """Open a checkpoint file or folder (local path or URL) with the right reader.

    With ``format_hint`` the named reader is used without detection. Otherwise each registered
    reader's ``detect`` is asked in order; the first that says yes opens it. Nothing matching is
    a :class:`DetectionError` that says what was looked for.
    """
    loc = location(path) if isinstance(path, str) else path
    if not loc.exists():
        raise DetectionError("no such file or folder", loc.display)
    if format_hint:
        return reader_class(format_hint)(loc)
    for name, _, _ in READERS:
        cls = reader_class(name)
        if cls.detect(loc):
            return cls(loc)
    what = "folder" if loc.is_dir() else "file"
    raise DetectionError(
        f"no supported checkpoint in this {what}; looked for: " + "; ".join(LOOKED_FOR)
        + " (use --format-hint to force one)",
        loc.display,
    )
