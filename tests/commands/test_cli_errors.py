"""The CLI's error handling: one line and exit 2 for every expected failure, never a traceback."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from ckpt_audit.cli import error_line
from ckpt_audit.errors import FormatError
from tests.support.cli import run_cli

ROOT = Path(__file__).resolve().parents[2]


def test_error_line_is_pure_and_names_the_extra() -> None:
    assert error_line(FormatError("bad", "f.safetensors")) == (
        "ckpt-audit: error: f.safetensors: bad", 2)
    line, code = error_line(ModuleNotFoundError("x", name="torch.nn"))  # type: ignore[misc]
    assert code == 2 and "ckpt-audit[mtp]" in line
    assert error_line(ModuleNotFoundError("x", name="numpyy")) is None
    assert error_line(ValueError("bug")) is None
    assert error_line(RecursionError())[1] == 2  # type: ignore[index]
    assert error_line(FormatError("a\nb\x1b", "p\n")) == ("ckpt-audit: error: p\\n: a\\nb\\x1b", 2)


def test_usage_errors_exit_2_with_one_message() -> None:
    res = run_cli(["bands"])  # --d-model is required
    assert res.code == 2 and "--d-model" in res.err and "Traceback" not in res.err
    res = run_cli(["no-such-command"])
    assert res.code == 2 and "Traceback" not in res.err


def test_missing_optional_package_is_one_line(tmp_path: Path) -> None:
    """Run `accept` in a process where importing torch fails, as in a base install."""
    code = textwrap.dedent("""
        import sys
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name == "torch" or name.startswith("torch."):
                    raise ModuleNotFoundError("No module named 'torch'", name=name)
        sys.meta_path.insert(0, Block())
        from ckpt_audit.cli import main
        main(["accept", sys.argv[1], "--probe", sys.argv[1]])
    """)
    p = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True,
                       text=True, cwd=ROOT)
    assert p.returncode == 2, p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and "ckpt-audit[mtp]" in lines[0]
