"""Helpers shared by command modules: writing a document where it was asked, safely."""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Sequence
from functools import cache
from typing import TYPE_CHECKING, Any

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


def finite(option: str, value: float | None) -> float | None:
    """A float option must be a number: ``nan`` and ``inf`` (which click accepts) are refused."""
    if value is not None and not math.isfinite(value):
        raise CkptAuditError(f"{option} must be a finite number, not {value!r}")
    return value


def refuse_inside_any(output: str | None, folders: Sequence[str]) -> None:
    """Never write a report or plot inside a run or checkpoint folder."""
    if output:
        for folder in folders:
            refuse_inside(output, folder)


def emit(text: str, output: str | None, checkpoints: Sequence[str] = ()) -> None:
    """Write ``text`` to ``output`` (checked) or stdout."""
    if output:
        refuse_inside_any(output, checkpoints)
        try:
            with open(output, "w", encoding="utf-8") as fh:
                fh.write(text)
        except OSError as exc:
            raise CkptAuditError(f"cannot write output ({exc.strerror})", output) from None
    else:
        sys.stdout.write(text)


#: Exit code when the reader of stdout went away (``| head``): 128 + SIGPIPE, like a shell tool.
EXIT_CLOSED_PIPE = 141


@cache
def _console_class() -> type[Console]:
    """Rich's console, quiet on a closed pipe; built on first use, so a JSON audit never imports
    rich."""
    from rich.console import Console

    class _Console(Console):
        def on_broken_pipe(self) -> None:
            """The reader went away: stop quietly with :data:`EXIT_CLOSED_PIPE` (Rich's default
            exit code 1 would read as "findings")."""
            try:
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            except (OSError, ValueError):
                pass
            raise SystemExit(EXIT_CLOSED_PIPE)

    return _Console


def console(width: int | None = None, soft_wrap: bool = False) -> Console:
    """A stdout console; ``COLUMNS``/``--width`` pin the width; a closed pipe ends quietly."""
    return _console_class()(width=width, soft_wrap=soft_wrap)


def say(line: str) -> None:
    """One line for the person at the terminal (stderr: never mixed into a report on stdout)."""
    sys.stderr.write(line + "\n")


def verdict_line(doc: Any) -> str:
    """``ckpt-audit: FAIL (2 findings: 1 fail, 1 warn)``: the document's verdict and why."""
    from ckpt_audit.report import document_findings

    counts: dict[str, int] = {}
    for f in document_findings(doc):
        if f.severity.value != "ok":
            counts[f.severity.value] = counts.get(f.severity.value, 0) + 1
    detail = ", ".join(f"{counts[k]} {k}" for k in ("fail", "warn", "info") if k in counts)
    n = sum(counts.values())
    return (f"ckpt-audit: {doc.verdict.upper()} ({n} finding{'s' * (n != 1)}"
            + (f": {detail})" if detail else ")"))


def github_outputs(doc: Any, github: bool | None, opts: Any,
                   checkpoints: Sequence[str] = ()) -> None:
    """Under GitHub Actions (or ``--github``): an annotation per finding on stdout and the
    Markdown report appended to the step summary, which like any other write is never inside
    the ``checkpoints`` (or runs) read."""
    from ckpt_audit.report import render
    from ckpt_audit.report.github import (
        append_step_summary,
        document_annotations,
        in_github_actions,
    )

    if not (github if github is not None else in_github_actions()):
        return
    refuse_inside_any(os.environ.get("GITHUB_STEP_SUMMARY"), checkpoints)
    for line in document_annotations(doc):
        sys.stdout.write(line + "\n")
    append_step_summary(render(doc, "markdown", opts))


def write_document(doc: Any, fmt: str, output: str | None, opts: Any,
                   checkpoints: Sequence[str] = ()) -> None:
    """Render ``doc`` in ``fmt`` to ``output`` or stdout (a table on a terminal in colour);
    with ``output``, the verdict and where the report went are said on stderr."""
    from ckpt_audit.report import draw, render

    refuse_inside_any(output, checkpoints)
    if fmt == "table" and output is None:
        draw(doc, console(opts.width), opts)
        return
    emit(render(doc, fmt, opts), output)
    if output:
        say(f"{verdict_line(doc)}; {fmt} report written to {output}")
