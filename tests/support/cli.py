"""Run the CLI: in-process (``run_cli``) or as the real ``python -m ckpt_audit`` process."""

from __future__ import annotations

import io
import os
import sys
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass

from tests.support.paths import ROOT


@dataclass
class CliResult:
    code: int
    out: str
    err: str


def run_cli(args: list[str]) -> CliResult:
    """Run ``ckpt-audit ARGS`` in-process (the same ``main`` as the console script)."""
    from ckpt_audit.cli import main

    out, err = io.StringIO(), io.StringIO()
    code = 0
    old_cols = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = "160"
    try:
        with redirect_stdout(out), redirect_stderr(err):
            try:
                main(args)
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        if old_cols is None:
            os.environ.pop("COLUMNS", None)
        else:
            os.environ["COLUMNS"] = old_cols
    return CliResult(code, out.getvalue(), err.getvalue())


def run_subprocess(args: list[str], **kw: object) -> CliResult:
    """Run the real ``python -m ckpt_audit`` process (for tracebacks and import costs)."""
    import subprocess

    env = dict(os.environ)
    env.pop("CKPT_AUDIT_DEBUG", None)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.update(kw.pop("env", {}) or {})  # type: ignore[arg-type]
    p = subprocess.run([sys.executable, "-m", "ckpt_audit", *args], capture_output=True,
                       text=True, env=env, timeout=300, **kw)  # type: ignore[call-overload]
    return CliResult(p.returncode, p.stdout, p.stderr)
