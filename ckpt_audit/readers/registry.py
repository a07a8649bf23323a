"""Which formats exist and in which order they are tried.

Detection order matters: the more specific layouts (Megatron, DCP, DeepSpeed run folders) come
before the generic ones (a folder of safetensors). Each entry is ``(format name, module, class,
folder signature)``; a reader is imported only when asked, and a local folder asks only the
readers whose signature its listing fits (:mod:`ckpt_audit.readers.signatures`), so auditing a
folder of safetensors imports neither the pickle readers nor GGUF's.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Collection

from ckpt_audit.errors import DetectionError
from ckpt_audit.readers import signatures as sig
from ckpt_audit.readers.base import CheckpointReader
from ckpt_audit.storage import Location, location

#: (format name, module path, class name, folder signature), in detection order.
READERS: list[tuple[str, str, str, Callable[[Collection[str]], bool]]] = [
    ("megatron-torch_dist", "ckpt_audit.readers.dcp_reader", "MegatronDistReader",
     sig.dcp_folder_marks),
    ("megatron-legacy", "ckpt_audit.readers.megatron_legacy", "MegatronLegacyReader",
     sig.megatron_legacy_folder),
    ("dcp", "ckpt_audit.readers.dcp_reader", "DcpReader", sig.dcp_folder_marks),
    ("deepspeed", "ckpt_audit.readers.deepspeed_reader", "DeepSpeedReader", sig.deepspeed_folder),
    ("meta", "ckpt_audit.readers.meta_reader", "MetaReader", sig.meta_folder),
    ("safetensors", "ckpt_audit.readers.safetensors_reader", "SafetensorsReader",
     sig.safetensors_folder),
    ("torch", "ckpt_audit.readers.torch_reader", "TorchReader", sig.torch_folder),
    # single files recognised by their first bytes (GGUF magic; llama2.c magic or a sane header
    # that matches the file size), after torch so that a zip named *.bin is never llama2.c
    ("gguf", "ckpt_audit.readers.gguf_reader", "GGUFReader", sig.file_only),
    ("llama2c", "ckpt_audit.readers.llama2c_reader", "Llama2cReader", sig.file_only),
]

#: Formats a single file can be, tried on each file of a folder no folder layout matched.
FILE_FORMATS = ("safetensors", "torch", "gguf", "llama2c")
#: Files of a folder that are never weights (configs, tokenizers, docs).
NOT_WEIGHTS = re.compile(r"\.(?:json|txt|md|py|model|yaml|yml|toml|cfg|ini|log|lock|sh)$|^\.",
                         re.IGNORECASE)
#: Files looked at, at most, when a folder is searched for its one weight file.
MAX_FOLDER_FILES = 256

#: What detection looks for, shown when nothing matched.
LOOKED_FOR = [
    "Megatron run folder (latest_checkpointed_iteration.txt) or iter_XXXXXXX/ with "
    "mp_rank_TT[_PPP]/model_optim_rng.pt (legacy) or metadata.json + .metadata (torch_dist)",
    "PyTorch Distributed Checkpoint folder (.metadata + __R_N.distcp)",
    "DeepSpeed folder (latest + global_stepN/mp_rank_00_model_states.pt)",
    "*.safetensors / model.safetensors.index.json",
    "Meta consolidated.NN.pth + params.json",
    "pytorch_model.bin / *.pt / *.pth / *.ckpt / pytorch_model.bin.index.json (torch zip or "
    "legacy pickles)",
    "a GGUF file (magic GGUF)",
    "a llama2.c model file (v1/v2 magic ak42, or a v0 header matching the file size)",
    "a folder whose only weight file is one of these files, whatever its name",
]


#: When both match, the key is the more specific reading of the same files, or (safetensors over
#: torch) the documented preference for the same weights saved twice; any other overlap is an
#: ambiguity the user must settle with --format-hint.
SUPERSEDES: dict[str, frozenset[str]] = {
    "megatron-torch_dist": frozenset({"dcp"}),
    "megatron-legacy": frozenset({"torch"}),  # a lone model_optim_rng.pt is a torch zip too
    "safetensors": frozenset({"torch"}),
    "meta": frozenset({"torch"}),
}


def available_formats() -> list[str]:
    """Names accepted by ``--format-hint``."""
    return [name for name, _, _, _ in READERS]


def reader_class(fmt: str) -> type[CheckpointReader]:
    """The reader class for one format name."""
    for name, module, cls, _ in READERS:
        if name == fmt:
            return getattr(importlib.import_module(module), cls)  # type: ignore[no-any-return]
    raise DetectionError(
        f"unknown format {fmt!r}; known formats: {', '.join(available_formats())}"
    )


def candidate_formats(loc: Location) -> list[str]:
    """The formats whose reader is asked about ``loc``, in detection order: for a local folder
    those whose signature its listing fits, else all of them (a file; a remote folder, whose
    listing may be a probe of well-known names)."""
    if loc.local_path is None or not loc.is_dir():
        return available_formats()
    names = frozenset(name.lower() for name in loc.listdir())  # the marks are lower case
    return [name for name, _, _, fits in READERS if fits(names)]


def weight_files(folder: Location) -> list[tuple[str, str]]:
    """``(file name, format)`` of every file in ``folder`` that a single-file reader recognises
    by its content (magic bytes, headers), whatever its name; configs and docs are skipped."""
    found: list[tuple[str, str]] = []
    names = sorted(n for n in folder.listdir() if not NOT_WEIGHTS.search(n))
    for name in names[:MAX_FOLDER_FILES]:
        child = folder.child(name)
        if child.is_dir():
            continue
        for fmt in FILE_FORMATS:
            if reader_class(fmt).detect(child):
                found.append((name, fmt))
                break
    return found


def open_checkpoint(path: str | Location, format_hint: str | None = None,
                    state_key: str | None = None) -> CheckpointReader:
    """Open a checkpoint and, with ``state_key``, say which subtree of a pickle holds the
    weights (``--state-key ema``): only readers that unpickle a free-form tree accept it."""
    reader = _open(path, format_hint)
    if state_key:
        if not reader.accepts_state_key:
            reader.close()
            raise DetectionError(f"--state-key applies to torch pickles, not to the "
                                 f"{reader.format} format", reader.display)
        reader.state_key = state_key
    return reader


def _open(path: str | Location, format_hint: str | None = None) -> CheckpointReader:
    """Open a checkpoint file or folder (local path or URL) with the right reader.

    Args:
        path: a local file or folder, a ``file://`` path, or a URL (``https://``, ``s3://``,
            ``gs://``, ``hf://``), or an already built :class:`~ckpt_audit.storage.Location`.
        format_hint: a name from :func:`available_formats` to skip detection and use that
            reader. Otherwise each registered reader's ``detect`` is asked in order.

    Returns:
        A lazily opened :class:`CheckpointReader`: only headers are read until values are asked
        for (``read``/``read_many``). It holds open files (or connections): close it, best with
        ``with open_checkpoint(path) as reader: ...``.

    Raises:
        DetectionError: the path does not exist, nothing matched (the message says what was
            looked for), several formats matched, or the hint names no format.
        FormatError: the matched reader found the files malformed (truncated, bad header,
            offsets outside the file, …), naming the file.
        RemoteError: a URL could not be read (status, timeout, server ignoring Range).
        UnsafePickleError: a pickle-based format named a global outside the allowlist.
    All four are :class:`~ckpt_audit.errors.CkptAuditError`.
    """
    loc = location(path) if isinstance(path, str) else path
    if not loc.exists():
        raise DetectionError("no such file or folder", loc.display)
    if format_hint:
        return reader_class(format_hint)(loc)
    matches = [name for name in candidate_formats(loc) if reader_class(name).detect(loc)]
    dropped = {old for m in matches for old in SUPERSEDES.get(m, ())}
    matches = [m for m in matches if m not in dropped]
    if len(matches) > 1:
        raise DetectionError(
            f"this looks like several formats at once ({', '.join(matches)}); "
            "choose one with --format-hint",
            loc.display,
        )
    if matches:
        return reader_class(matches[0])(loc)
    if loc.is_dir():
        found = weight_files(loc)
        if len(found) == 1:
            name, fmt = found[0]
            return reader_class(fmt)(loc.child(name))
        if len(found) > 1:
            raise DetectionError(
                "this folder holds several candidate checkpoints ("
                + ", ".join(f"{n}: {f}" for n, f in found)
                + "); audit one of them by its path",
                loc.display,
            )
    what = "folder" if loc.is_dir() else "file"
    raise DetectionError(
        f"no supported checkpoint in this {what}; looked for: " + "; ".join(LOOKED_FOR)
        + " (use --format-hint to force one)",
        loc.display,
    )
