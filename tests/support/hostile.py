"""Hand-assembled hostile inputs: pickle opcodes, torch zips with a swapped ``data.pkl``.

Test-only. Checkpoints start from a real ``torch.save`` archive; only ``data.pkl`` (and, when
asked, storage records) are replaced, so everything else is what torch writes.
"""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

from tests.support.paths import ROOT


def cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """The real ``python -m ckpt_audit`` process, killed after ``timeout`` s (a hang fails)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    env.pop("CKPT_AUDIT_DEBUG", None)
    return subprocess.run([sys.executable, "-m", "ckpt_audit", *args], capture_output=True,
                          text=True, timeout=timeout, env=env)


def one_line(r: subprocess.CompletedProcess[str], code: int = 2) -> str:
    """The stderr of a run that must end in ``code`` with exactly one line and no traceback."""
    assert r.returncode == code, (r.returncode, r.stdout, r.stderr)
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr, r.stderr
    return r.stderr


def X(s: str) -> bytes:
    """BINUNICODE."""
    b = s.encode()
    return b"X" + struct.pack("<I", len(b)) + b


def I(n: int) -> bytes:  # noqa: E743 - opcode name
    """BININT when it fits (what torch writes), else the text INT opcode (any size)."""
    if -(1 << 31) <= n < (1 << 31):
        return b"J" + struct.pack("<i", n)
    return b"I%d\n" % n


def G(module: str, name: str) -> bytes:
    """GLOBAL."""
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def TUP(items: tuple[int, ...]) -> bytes:
    return b"(" + b"".join(I(i) for i in items) + b"t"


def tensor(shape: tuple[int, ...], stride: tuple[int, ...], key: str = "0", numel: int = 4,
           storage: str = "FloatStorage", offset: int = 0) -> bytes:
    """Opcodes that push one ``_rebuild_tensor_v2`` tensor (as torch.save writes it)."""
    pid = b"(" + X("storage") + G("torch", storage) + X(key) + X("cpu") + I(numel) + b"tQ"
    return (G("torch._utils", "_rebuild_tensor_v2") + b"(" + pid + I(offset) + TUP(shape)
            + TUP(stride) + b"\x89" + G("collections", "OrderedDict") + b")R" + b"tR")


def state_dict(entries: dict[str, bytes]) -> bytes:
    """A protocol-2 pickle of ``{name: <opcodes>}``."""
    body = b"".join(X(k) + v + b"s" for k, v in entries.items())
    return b"\x80\x02}" + body + b"."


def torch_zip(path: Path, pkl: bytes, storages: dict[str, bytes] | None = None) -> Path:
    """A real torch.save archive whose data.pkl (and storages) are replaced."""
    import torch

    tmp = path.with_suffix(".orig")
    torch.save({"x": torch.zeros(4)}, tmp)
    with zipfile.ZipFile(tmp) as src:
        names = src.namelist()
        prefix = next(n for n in names if n.endswith("/data.pkl"))[: -len("data.pkl")]
        records = {n: src.read(n) for n in names if not n.startswith(prefix + "data/")}
    tmp.unlink()
    records[prefix + "data.pkl"] = pkl
    for key, data in (storages if storages is not None else {"0": b"\0" * 16}).items():
        records[f"{prefix}data/{key}"] = data
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as out:
        for n, data in records.items():
            out.writestr(n, data)
    return path
