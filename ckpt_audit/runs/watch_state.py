"""``watch``: poll a run for new complete checkpoints and audit each exactly once.

The state file remembers which checkpoints were audited (by path, with a fingerprint of sizes
and mtimes, so a checkpoint rewritten in place is audited again). It is never written inside the
run folder (and so never inside a checkpoint folder): by default it lives under the user's cache
folder (``$XDG_CACHE_HOME`` or ``~/.cache``, ``%LOCALAPPDATA%`` on Windows) as
``ckpt-audit/watch/<sha1 of the run's absolute path>.json``; ``--state FILE`` picks another place.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ckpt_audit.errors import CkptAuditError
from ckpt_audit.runs.discovery import Run, RunCheckpoint

STATE_SCHEMA = "ckpt-audit.watch-state/1"


def cache_dir(env: Mapping[str, str] | None = None) -> str:
    """The user's cache folder for ckpt-audit."""
    env = os.environ if env is None else env
    if sys.platform.startswith("win") and env.get("LOCALAPPDATA"):
        base = env["LOCALAPPDATA"]
    else:
        base = env.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "ckpt-audit")


def default_state_path(run_path: str, env: Mapping[str, str] | None = None) -> str:
    """Where ``watch`` keeps its state for ``run_path`` when ``--state`` is not given."""
    digest = hashlib.sha1(os.path.abspath(run_path).encode("utf-8")).hexdigest()[:16]
    return os.path.join(cache_dir(env), "watch", f"{digest}.json")


def check_state_path(state_path: str, run_path: str) -> None:
    """Refuse a state file inside the run folder: nothing is ever written where checkpoints live."""
    state = os.path.realpath(os.path.abspath(state_path))
    run = os.path.realpath(os.path.abspath(run_path))
    if state == run or state.startswith(run.rstrip(os.sep) + os.sep):
        raise CkptAuditError("the state file must not be inside the run folder (ckpt-audit never "
                             "writes where checkpoints live); pass --state elsewhere", state_path)


def fingerprint(ckpt: RunCheckpoint) -> str:
    """A digest of a checkpoint's file names, sizes and mtimes (``stat`` only, no reads)."""
    h = hashlib.sha1()
    paths = [ckpt.path] if not os.path.isdir(ckpt.path) else sorted(
        os.path.join(d, f) for d, _, files in os.walk(ckpt.path) for f in files)
    for p in paths:
        try:
            st = os.stat(p)
        except OSError:
            continue
        h.update(f"{os.path.relpath(p, ckpt.path)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


@dataclass
class WatchState:
    """What was audited already: ``{path: {"step", "verdict", "fingerprint", "audited_at"}}``."""

    run: str
    audited: dict[str, dict[str, Any]] = field(default_factory=dict)

    def is_new(self, ckpt: RunCheckpoint, fp: str) -> bool:
        seen = self.audited.get(os.path.abspath(ckpt.path))
        return seen is None or seen.get("fingerprint") != fp

    def record(self, ckpt: RunCheckpoint, fp: str, verdict: str, now: float | None = None) -> None:
        self.audited[os.path.abspath(ckpt.path)] = {
            "step": ckpt.step, "verdict": verdict, "fingerprint": fp,
            "audited_at": time.time() if now is None else now}


def load_state(path: str, run_path: str) -> WatchState:
    """The state at ``path`` (a fresh one when absent); a state of another run is an error."""
    run = os.path.abspath(run_path)
    try:
        with open(path, "rb") as fh:
            data = json.loads(fh.read())
    except FileNotFoundError:
        return WatchState(run)
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise CkptAuditError(f"unreadable watch state ({exc}); delete it to start over",
                             path) from None
    if not isinstance(data, dict) or data.get("schema") != STATE_SCHEMA:
        raise CkptAuditError(f"not a ckpt-audit watch state (schema {STATE_SCHEMA})", path)
    if data.get("run") != run:
        raise CkptAuditError(f"this state belongs to run {data.get('run')!r}, not {run!r}", path)
    audited = data.get("audited")
    return WatchState(run, dict(audited) if isinstance(audited, dict) else {})


def save_state(path: str, state: WatchState) -> None:
    """Write the state atomically (temporary file in the same folder, then rename)."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".watch-", suffix=".json", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump({"schema": STATE_SCHEMA, "run": state.run, "audited": state.audited},
                      fh, indent=1, sort_keys=True)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def pending(run: Run, state: WatchState) -> list[tuple[RunCheckpoint, str]]:
    """Complete checkpoints not audited yet (or changed since), with their fingerprints."""
    out = []
    for ckpt in run.complete:
        fp = fingerprint(ckpt)
        if state.is_new(ckpt, fp):
            out.append((ckpt, fp))
    return out
