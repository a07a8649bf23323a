"""Run discovery: find the checkpoints of a training run, order them by step, flag incomplete ones.

A *run* is a folder whose children are checkpoints named by the writer that made them:

==================  ====================================  ===========
writer              child name                            layout
==================  ====================================  ===========
HF Trainer          ``checkpoint-N`` (``tmp-checkpoint-N``) ``hf-trainer``
Megatron            ``iter_NNNNNNN``                      ``megatron``
DeepSpeed           ``global_stepN``                      ``deepspeed``
torchtitan/generic  ``step-N`` / ``step_N`` (folder or file) ``step``
Lightning           ``...step=N....ckpt``                 ``lightning``
==================  ====================================  ===========

Completeness is decided in two stages so the decision itself is a pure function:
:func:`snapshot` does the I/O (a listing with sizes, the declared size of every safetensors file
from its 8-byte header length and JSON header, the zip end record of torch files, the files that
index JSONs name) and :func:`assess` turns a snapshot into a list of problems. A checkpoint with
any problem is *incomplete*: it is listed, never audited as passing. :func:`discover_run` can
take two snapshots ``settle`` seconds apart; a size or mtime that changed means "still being
written". Nothing here writes anything.
"""

from __future__ import annotations

import io
import os
import re
import time
from collections.abc import Iterable

from ckpt_audit.errors import CkptAuditError, DetectionError
from ckpt_audit.readers.hf_index import shard_names
from ckpt_audit.readers.safetensors_format import declared_size, prefix_length
from ckpt_audit.readers.signatures import DEEPSPEED_LATEST, TRACKER
from ckpt_audit.records import frozen
from ckpt_audit.storage.local import open_regular, read_json_local, read_local

#: (layout, compiled pattern on the child's name); the first match wins.
NAME_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("hf-trainer-tmp", re.compile(r"^tmp-checkpoint-(\d+)$")),
    ("hf-trainer", re.compile(r"^checkpoint-(\d+)$")),
    ("megatron", re.compile(r"^iter_(\d+)$")),
    ("deepspeed", re.compile(r"^global_step(\d+)$")),
    ("lightning", re.compile(r"^(?:.*[-_])?step=(\d+)(?:[-_.].*)?\.ckpt$")),
    ("step", re.compile(r"^step[-_](\d+)(?:\.[A-Za-z0-9.]+)?$")),
)

#: File names that mark a file still being written (or abandoned half-way).
PARTIAL_SUFFIXES = (".tmp", ".temp", ".part", ".partial", ".incomplete", ".lock", ".download")
PARTIAL_PREFIXES = ("tmp", ".tmp", ".~", "~")
#: Files that hold weights; a checkpoint without any of them is not a model checkpoint.
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".distcp", ".gguf", ".ckpt")
#: Tracker files written after a save finishes (Megatron, DeepSpeed).
TRACKERS = (TRACKER, DEEPSPEED_LATEST)

_SHARD = re.compile(r"^(?P<stem>.+)-(?P<k>\d{5})-of-(?P<n>\d{5})\.(?P<ext>safetensors|bin)$")
_MAX_DEPTH = 4
_MAX_FILES = 20000


@frozen
class FileEntry:
    """One file of a checkpoint as seen by :func:`snapshot` (``rel`` is relative to the checkpoint).

    ``declared_size`` is what a safetensors header says the file must be (8 + header + data);
    ``header_error`` says why a header or zip end record could not be read; ``refs`` lists the
    files an ``*.index.json`` names (relative to the index's folder).
    """

    rel: str
    size: int
    mtime_ns: int
    declared_size: int | None = None
    header_error: str | None = None
    refs: tuple[str, ...] = ()
    is_dir: bool = False


@frozen
class RunCheckpoint:
    """One checkpoint of a run: where it is, its step, the writer's layout and its completeness."""

    path: str
    name: str
    step: int
    layout: str
    complete: bool
    problems: tuple[str, ...] = ()


@frozen
class Run:
    """The checkpoints of one run, ordered by step (then name)."""

    path: str
    checkpoints: tuple[RunCheckpoint, ...]

    @property
    def complete(self) -> tuple[RunCheckpoint, ...]:
        return tuple(c for c in self.checkpoints if c.complete)

    @property
    def incomplete(self) -> tuple[RunCheckpoint, ...]:
        return tuple(c for c in self.checkpoints if not c.complete)


def parse_name(name: str) -> tuple[str, int] | None:
    """``(layout, step)`` for a child named like a checkpoint, else ``None``."""
    for layout, pattern in NAME_PATTERNS:
        m = pattern.match(name)
        if m:
            return layout, int(m.group(1))
    return None


# ----------------------------------------------------------------------------------------- I/O


def _open_rb(path: str) -> io.BufferedReader:
    """A regular file opened for reading (a FIFO or folder is refused, never waited on)."""
    return os.fdopen(open_regular(path), "rb")


def _why(exc: BaseException) -> str:
    return exc.message if isinstance(exc, CkptAuditError) else str(exc)


def _safetensors_declared(path: str, size: int) -> tuple[int | None, str | None]:
    """The size a safetensors file must have according to its header, or why it is unreadable."""
    if size < 8:
        return None, f"only {size} bytes: no safetensors header"
    try:
        with _open_rb(path) as fh:
            n = prefix_length(fh.read(8), path)
            if 8 + n > size:
                return 8 + n, f"header length {n} does not fit in {size} bytes"
            return declared_size(fh.read(n), path), None
    except (OSError, CkptAuditError) as exc:
        return None, f"unreadable safetensors header ({_why(exc)})"


def _zip_tail_error(path: str, size: int) -> str | None:
    """For a torch zip file: ``None`` when the zip end-of-central-directory record is present."""
    try:
        with _open_rb(path) as fh:
            if fh.read(4) != b"PK\x03\x04":
                return None  # legacy (non-zip) torch file or not torch at all: nothing to check
            tail_len = min(size, 22 + 65535)
            fh.seek(size - tail_len)
            tail = fh.read(tail_len)
    except (OSError, CkptAuditError) as exc:
        return f"unreadable ({_why(exc)})"
    if b"PK\x05\x06" not in tail:
        return "zip end record missing (truncated or still being written)"
    return None


def _index_refs(path: str) -> tuple[tuple[str, ...], str | None]:
    try:
        data, _ = read_json_local(path, what="index", shared=True)
        return tuple(shard_names(data, path)), None
    except CkptAuditError as exc:
        return (), f"unreadable index ({_why(exc)})"


def _entry(root: str, rel: str, headers: bool = True) -> FileEntry | None:
    path = os.path.join(root, rel) if rel else root
    try:
        st = os.stat(path)
    except OSError:
        return None  # vanished between listing and stat: the next snapshot will tell
    declared = error = None
    refs: tuple[str, ...] = ()
    base = os.path.basename(path)
    if base.endswith(".safetensors"):
        if headers:
            declared, error = _safetensors_declared(path, st.st_size)
    elif base.endswith((".pt", ".pth", ".bin", ".ckpt")):
        error = _zip_tail_error(path, st.st_size)
    elif base.endswith(".index.json"):
        refs, error = _index_refs(path)
    return FileEntry(rel or base, st.st_size, st.st_mtime_ns, declared, error, refs)


def snapshot(path: str, headers: bool = True) -> tuple[FileEntry, ...]:
    """Every file of one checkpoint (a folder, walked a few levels deep, or a single file).
    ``headers=False`` leaves safetensors headers unread (see :func:`checkpoint_problems`)."""
    if not os.path.isdir(path):
        entry = _entry(path, "", headers)
        return (entry,) if entry else ()
    entries: list[FileEntry] = []
    base_depth = path.rstrip(os.sep).count(os.sep)
    for dirpath, dirnames, filenames in os.walk(path):
        if dirpath.count(os.sep) - base_depth >= _MAX_DEPTH:
            dirnames[:] = []
        dirnames.sort()
        for dname in dirnames:
            rel = os.path.relpath(os.path.join(dirpath, dname), path)
            entries.append(FileEntry(rel, 0, 0, is_dir=True))
        for fname in sorted(filenames):
            rel = os.path.relpath(os.path.join(dirpath, fname), path)
            entry = _entry(path, rel, headers)
            if entry:
                entries.append(entry)
            if len(entries) >= _MAX_FILES:
                return tuple(entries)
    return tuple(entries)


def read_trackers(run_path: str) -> dict[str, int]:
    """Steps named by the run's tracker files (Megatron ``latest_checkpointed_iteration.txt``,
    DeepSpeed ``latest``), by layout. A tracker is written after a save finishes."""
    out: dict[str, int] = {}
    for fname, layout in zip(TRACKERS, ("megatron", "deepspeed"), strict=True):
        try:
            raw = read_local(os.path.join(run_path, fname), 257)
            text = raw.decode("utf-8").strip()
        except (CkptAuditError, UnicodeDecodeError):
            continue
        if len(raw) > 256:  # a tracker holds one number: a longer file is not one
            continue
        m = re.fullmatch(r"(?:global_step)?([0-9]+)", text)  # ASCII digits only
        if m:
            out[layout] = int(m.group(1))
    return out


# ---------------------------------------------------------------------------------- pure logic


def _is_partial(name: str) -> bool:
    return name.endswith(PARTIAL_SUFFIXES) or name.startswith(PARTIAL_PREFIXES)


def assess(layout: str, entries: Iterable[FileEntry], *, is_file: bool = False,
           require_weights: bool = True) -> tuple[str, ...]:
    """Why a checkpoint is incomplete (empty tuple: complete). Pure: looks at the snapshot only.

    ``require_weights=False`` leaves out "no weight files" (``audit`` lets the format readers
    decide what a weight file is: an extension-less safetensors file, a llama2.c ``.bin``).
    """
    all_entries = tuple(entries)
    entries = tuple(e for e in all_entries if not e.is_dir)
    problems: list[str] = []
    if layout == "hf-trainer-tmp":
        problems.append("temporary Trainer folder (tmp-checkpoint-N): still being written")
    if not entries:
        return tuple(problems) + ("no files",)
    names = {e.rel for e in entries}
    basenames = {os.path.basename(e.rel) for e in entries}
    for e in entries:
        base = os.path.basename(e.rel)
        if _is_partial(base):
            problems.append(f"{e.rel}: partial file (still being written?)")
        if e.declared_size is not None and e.size < e.declared_size:
            problems.append(f"{e.rel}: truncated: header declares {e.declared_size} bytes, "
                            f"file has {e.size}")
        if e.header_error:
            problems.append(f"{e.rel}: {e.header_error}")
        folder = os.path.dirname(e.rel)
        for ref in e.refs:
            if os.path.normpath(os.path.join(folder, ref)) not in names:
                problems.append(f"{e.rel} names {ref}, which is absent")
        m = _SHARD.match(base)
        if m:
            n = int(m["n"])
            for k in range(1, n + 1):
                shard = f"{m['stem']}-{k:05d}-of-{n:05d}.{m['ext']}"
                if shard not in basenames:
                    problems.append(f"shard {shard} is missing")
    if require_weights and not any(os.path.basename(e.rel).endswith(WEIGHT_SUFFIXES)
                                   for e in entries):
        problems.append("no weight files (.safetensors, .bin, .pt, .pth, .distcp, .gguf, .ckpt)")
    if not is_file:
        problems.extend(_layout_problems(layout, all_entries, basenames))
    return tuple(dict.fromkeys(problems))  # de-duplicated, order kept


def _layout_problems(layout: str, entries: tuple[FileEntry, ...], basenames: set[str]) -> list[str]:
    problems: list[str] = []
    if "training_args.bin" in basenames and "trainer_state.json" not in basenames:
        problems.append("training_args.bin without trainer_state.json (the Trainer writes it "
                        "last): still being written")
    if any(b.endswith(".distcp") for b in basenames) and ".metadata" not in basenames:
        problems.append("*.distcp files without .metadata (written last by torch.distributed"
                        ".checkpoint): still being written")
    if layout == "megatron":
        rank_dirs = {e.rel.split(os.sep)[0] for e in entries if e.rel.startswith("mp_rank_")
                     and (e.is_dir or os.sep in e.rel)}
        for d in sorted(rank_dirs):
            if not any(e.rel.startswith(d + os.sep) and e.rel.endswith(".pt") and not e.is_dir
                       for e in entries):
                problems.append(f"{d}/ has no model_optim_rng.pt")
        if not rank_dirs and "metadata.json" not in basenames:
            problems.append("neither mp_rank_*/ folders nor a torch_dist metadata.json")
    if layout == "deepspeed" and not any(b.endswith("model_states.pt") for b in basenames):
        problems.append("no *model_states.pt (DeepSpeed writes mp_rank_00_model_states.pt)")
    return problems


def compare_snapshots(a: Iterable[FileEntry], b: Iterable[FileEntry]) -> tuple[str, ...]:
    """Files whose presence, size or mtime changed between two snapshots ("still being written")."""
    da = {e.rel: (e.size, e.mtime_ns) for e in a}
    db = {e.rel: (e.size, e.mtime_ns) for e in b}
    changed = sorted(k for k in set(da) | set(db) if da.get(k) != db.get(k))
    return tuple(f"{k}: changed while being examined (still being written)" for k in changed)


def tracker_problem(layout: str, step: int, trackers: dict[str, int]) -> str | None:
    """A checkpoint newer than its writer's tracker file has not been finalised yet."""
    tracked = trackers.get(layout)
    if tracked is not None and step > tracked:
        return (f"step {step} is newer than the tracker file's {tracked} (the writer updates it "
                "after a save finishes): still being written or the save failed")
    return None


def checkpoint_problems(path: str, *, headers: bool = True) -> tuple[str, ...]:
    """Why the one checkpoint at ``path`` (a local file or folder) is incomplete: the rules
    :func:`discover_run` applies to each checkpoint of a run, so ``audit`` and ``trend`` agree
    on every folder (numbered shards all present, index names only present files, no partial
    files, headers that fit their files). A lone shard file ``-0000k-of-0000n`` (n > 1) is one
    part of a checkpoint, never a whole one (the other shards are "missing" beside it).

    ``headers=False`` skips the one rule that parses every safetensors header (its declared size
    against the file's): for a caller that opens the checkpoint with the safetensors reader
    right after, which validates each header against its file as strictly and refuses a
    truncated shard itself, so the headers are decoded once, not twice (half the JSON work of a
    DeepSeek-V3-sized audit)."""
    name = os.path.basename(os.path.normpath(path))
    parsed = parse_name(name)
    layout = parsed[0] if parsed else "generic"
    return assess(layout, snapshot(path, headers), is_file=not os.path.isdir(path),
                  require_weights=False)


# --------------------------------------------------------------------------------- discovery


def discover_run(path: str, *, settle: float = 0.0) -> Run:
    """The checkpoints of the run at ``path``, ordered by step, each assessed for completeness.

    With ``settle`` > 0 every checkpoint is snapshotted twice, ``settle`` seconds apart, and any
    change marks it incomplete. Raises :class:`DetectionError` when ``path`` is not a folder or
    holds no child named like a checkpoint.
    """
    if not os.path.isdir(path):
        raise DetectionError("not a run folder (expected a folder of checkpoints)", path)
    try:
        children = sorted(os.listdir(path))
    except OSError as exc:
        raise DetectionError(f"cannot list folder ({exc.strerror})", path) from None
    found: list[tuple[str, str, int]] = []
    for name in children:
        parsed = parse_name(name)
        if parsed:
            found.append((name, *parsed))
    if not found:
        raise DetectionError(
            "no checkpoints in this run folder; looked for children named checkpoint-N, iter_N, "
            "global_stepN, step-N / step_N, *step=N*.ckpt", path)
    trackers = read_trackers(path)
    first = {name: snapshot(os.path.join(path, name)) for name, _, _ in found}
    second: dict[str, tuple[FileEntry, ...]] = {}
    if settle > 0:
        time.sleep(settle)
        second = {name: snapshot(os.path.join(path, name)) for name, _, _ in found}
    checkpoints = []
    for name, layout, step in found:
        full = os.path.join(path, name)
        problems = list(assess(layout, first[name], is_file=not os.path.isdir(full)))
        if settle > 0:
            problems.extend(compare_snapshots(first[name], second[name]))
        tp = tracker_problem(layout, step, trackers)
        if tp:
            problems.append(tp)
        shown = "hf-trainer" if layout == "hf-trainer-tmp" else layout
        checkpoints.append(RunCheckpoint(full, name, step, shown, not problems, tuple(problems)))
    checkpoints.sort(key=lambda c: (c.step, c.name))
    return Run(path, tuple(checkpoints))

