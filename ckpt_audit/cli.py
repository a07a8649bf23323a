"""The ``ckpt-audit`` command line: a thin Typer app that wires commands and decides exit codes.

Each command lives in its own module under :mod:`ckpt_audit.commands` (named like the command)
and exposes ``register(app)``; this module discovers them, so adding a command never touches this
file, and imports only the one a command line names.
Every :class:`~ckpt_audit.errors.CkptAuditError` becomes one line on stderr and exit code 2;
``CKPT_AUDIT_DEBUG=1`` shows the traceback instead.
"""

from __future__ import annotations

import atexit
import functools
import gc
import importlib
import os
import pkgutil
import sys
from typing import NoReturn

import typer

from ckpt_audit import __version__, commands
from ckpt_audit.commands._common import EXIT_CLOSED_PIPE
from ckpt_audit.errors import CkptAuditError, error_text, escape

app = typer.Typer(
    name="ckpt-audit",
    help="Audit LLM training checkpoints: norm-gain health, MTP completeness, MTP acceptance.",
    no_args_is_help=True,
    add_completion=True,
    context_settings={"help_option_names": ["-h", "--help"]},
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"ckpt-audit {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Audit LLM training checkpoints."""


class _Command(typer.core.TyperCommand):
    """A command whose ``-h/--help`` shows as the flag it is (no ``<bool>`` value)."""

    def get_help_option(self, ctx):  # type: ignore[no-untyped-def]
        opt = super().get_help_option(ctx)
        if opt is not None:
            opt.metavar = ""
        return opt


_registered: set[str] = set()


@functools.cache
def _command_modules() -> tuple[str, ...]:
    """The command modules, found once per process (``entry`` and ``main`` both register)."""
    return tuple(sorted(m.name for m in pkgutil.iter_modules(commands.__path__)
                        if not m.name.startswith("_")))


def register_commands(argv: list[str] | None = None) -> None:
    """Register the command ``argv`` names (its module only, so ``audit`` never imports what
    ``trend`` or ``accept`` need), or every command (for help, or when ``argv`` names none)."""
    wanted = _command_modules()
    first = next((a for a in argv or () if not a.startswith("-")), None)
    if first is not None and first in wanted:
        wanted = (first,)
    for name in wanted:
        if name in _registered:
            continue
        _registered.add(name)
        module = importlib.import_module(f"ckpt_audit.commands.{name}")
        register = getattr(module, "register", None)
        if register is not None:
            register(app)
    for command in app.registered_commands:
        if command.cls in (None, typer.core.TyperCommand):
            command.cls = _Command


#: Optional packages and the extra that installs them (``pip install 'ckpt-audit[EXTRA]'``).
OPTIONAL = {"torch": "mtp", "transformers": "mtp", "tokenizers": "mtp", "accelerate": "mtp",
            "safetensors": "mtp", "gguf": "gguf", "fsspec": "remote", "s3fs": "remote",
            "gcsfs": "remote", "aiohttp": "remote", "huggingface_hub": "remote",
            "matplotlib": "plot", "lightning": "all"}


def error_line(exc: BaseException) -> tuple[str, int] | None:
    """The one line and exit code for an expected failure, or None for a real bug.

    Pure (tested on its own): input errors (:class:`CkptAuditError`), a missing optional
    package, and command-line usage errors (Typer's bundled click exceptions, recognised by
    their ``show``/``exit_code`` interface since click is vendored and may not be importable).
    """
    if isinstance(exc, CkptAuditError):
        return error_text(exc), exc.exit_code
    if isinstance(exc, RecursionError | MemoryError):  # a hostile input past a budget we missed
        what = "nested too deeply" if isinstance(exc, RecursionError) else "too large"
        return (f"ckpt-audit: error: the input is {what} to read ({type(exc).__name__}); "
                "refused", 2)
    if isinstance(exc, ModuleNotFoundError) and exc.name:
        top = exc.name.split(".")[0]
        if top in OPTIONAL:
            return (f"ckpt-audit: error: this needs the optional package {top!r}: "
                    f"pip install 'ckpt-audit[{OPTIONAL[top]}]'", 2)
    return None


def usage_line(exc: BaseException) -> str:
    """A command-line usage error (Typer's bundled click exception) as one line."""
    fmt = getattr(exc, "format_message", None)
    message = fmt() if callable(fmt) else str(exc)
    ctx = getattr(exc, "ctx", None)
    where = getattr(ctx, "command_path", None) or "ckpt-audit"
    return (f"{where}: error: {' '.join(str(message).split())} "
            f"(see `{where} -h`)")


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the app, turning input errors into one line and exit code 2; a closed
    stdout pipe ends quietly with :data:`EXIT_CLOSED_PIPE` (never 1, the findings code)."""
    try:
        try:
            _main(argv)
        except SystemExit:
            if type(sys.stdout).__name__ == "PacifyFlushWrapper":  # click met EPIPE: exit(1)
                raise BrokenPipeError from None
            raise
        finally:
            sys.stdout.flush()
    except BrokenPipeError:
        try:  # nothing more can be written; keep the interpreter's final flush quiet too
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError):
            pass
        sys.exit(EXIT_CLOSED_PIPE)


def entry() -> NoReturn:
    """The console script and ``python -m ckpt_audit``: :func:`main`, then a quick exit.

    Design note: a normal interpreter exit frees every object one at a time and tears down every
    module; after an audit of DeepSeek-V3 (~10^5 names from its index and headers) that is
    25-70 ms which change nothing a user sees. So, when no other thread runs, the exit handlers
    (:mod:`atexit`) run, stdout and stderr are flushed, and the process ends with ``os._exit``
    and the same status. Anything unusual (a flush that fails, another thread) takes the normal
    exit instead. Library callers and tests call :func:`main`, which never ends the process
    this way.

    Design note (start-up): numpy is imported here, first, at the shallowest frame (every
    command imports it: the readers use it). Imported later, from inside a command's own chain
    of imports some 20 frames deeper, numpy's deep import tree crosses the end of CPython 3.11's
    first 16 KiB chunk of frame stack hundreds of times, and each crossing allocates and frees
    a chunk (mmap, page faults, munmap): measured 690 such pairs against 2 on a
    DeepSeek-V3-sized audit, ~4% of the process. The command's modules follow, with the cyclic
    collector paused: what start-up imports lives until the process ends, so it is frozen
    (``gc.freeze``) and no later collection walks it again."""
    collecting = gc.isenabled()
    gc.disable()
    quiet_blas(sys.argv[1:])
    import numpy  # noqa: F401  (see the design note: imported shallow, before any command)

    register_commands(sys.argv[1:])
    gc.freeze()
    if collecting:
        gc.enable()
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = exit_status(exc.code)
    threading = sys.modules.get("threading")
    if threading is None or threading.active_count() == 1:
        atexit._run_exitfuncs()
        try:
            for stream in (sys.stdout, sys.stderr):
                if stream is not None:  # None: started with the descriptor closed (``2>&-``)
                    stream.flush()
        except (OSError, ValueError):
            sys.exit(code)
        os._exit(code)
    sys.exit(code)


def exit_status(code: object) -> int:
    """The process status ``sys.exit(code)`` ends with: 0 for None, an int as is, else the
    value printed to stderr and 1 (as the interpreter does)."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    sys.stderr.write(f"{code}\n")
    return 1


def quiet_blas(argv: list[str]) -> bool:
    """Start numpy without OpenBLAS's thread pool, unless the command line runs a model.

    Design note: importing numpy starts OpenBLAS's threads, ~0.13 s of CPU per process on 2
    cores (more with more cores), and no command here does linear algebra in numpy: gains are
    vectors. ``accept`` and ``audit --probe`` run a model in torch (MKL on x86; OpenBLAS on some
    builds), so they keep the default. A user's own ``OPENBLAS_NUM_THREADS`` always wins, and
    nothing changes once numpy is imported (as in a library caller). Returns whether it was set.
    """
    if "numpy" in sys.modules or "accept" in argv or any(a.startswith("--probe") for a in argv):
        return False
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    return True


def _main(argv: list[str] | None) -> None:
    debug = os.environ.get("CKPT_AUDIT_DEBUG") == "1"
    args = sys.argv[1:] if argv is None else argv
    quiet_blas(args)
    register_commands(args)
    try:
        rv = app(args=argv, standalone_mode=False)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except (KeyboardInterrupt, typer.Abort):
        sys.stderr.write("ckpt-audit: interrupted\n")
        sys.exit(130)
    except BrokenPipeError:
        raise
    except Exception as exc:
        expected = error_line(exc)
        if expected is not None and not debug:
            sys.stderr.write(expected[0] + "\n")
            sys.exit(expected[1])
        show, code = getattr(exc, "show", None), getattr(exc, "exit_code", None)
        if callable(show) and isinstance(code, int):  # a usage error: click's message, one line
            sys.stderr.write(usage_line(exc) + "\n")
            sys.exit(2)
        if debug:
            raise
        sys.stderr.write(f"ckpt-audit: internal error: {type(exc).__name__}: {escape(exc)} "
                         "(set CKPT_AUDIT_DEBUG=1 for a traceback)\n")
        sys.exit(3)
    sys.exit(rv if isinstance(rv, int) else 0)
