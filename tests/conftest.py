"""Shared fixtures: paths, a CLI runner, and checkpoints written by the real libraries."""

from __future__ import annotations

import io
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = ROOT.parent / "shared" / "data"
STORIES = SHARED_DATA / "stories260K.bin"


@pytest.fixture(scope="session")
def stories_path() -> Path:
    """The real pretrained llama2.c model in ../shared/data (skips with the reason if absent)."""
    if not STORIES.is_file():
        require_data(f"real model absent: {STORIES} (CI provides ../shared/data beside the repo)")
    return STORIES


def require_data(reason: str) -> None:
    """Skip a test that needs real data, or fail when CKPT_AUDIT_REQUIRE_DATA=1 (CI)."""
    if os.environ.get("CKPT_AUDIT_REQUIRE_DATA") == "1":
        pytest.fail(f"required real data is missing: {reason}")
    pytest.skip(reason)


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
                code = int(exc.code or 0)
    finally:
        if old_cols is None:
            os.environ.pop("COLUMNS", None)
        else:
            os.environ["COLUMNS"] = old_cols
    return CliResult(code, out.getvalue(), err.getvalue())


@pytest.fixture
def cli() -> Callable[[list[str]], CliResult]:
    return run_cli


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


@contextmanager
def moto_s3(bucket: str) -> Iterator[tuple[dict[str, str], Any]]:
    """A real S3-compatible server (moto's server mode) on 127.0.0.1 with one empty bucket.

    Yields the storage options for ``s3://`` reads and a boto3 client to fill the bucket.
    Dummy credentials are set in the environment for the duration; nothing leaves the machine.
    """
    pytest.importorskip("s3fs")
    moto_server = pytest.importorskip("moto.server")
    boto3 = pytest.importorskip("boto3")
    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_DEFAULT_REGION": "us-east-1"}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
        client.create_bucket(Bucket=bucket)
        yield {"endpoint_url": endpoint, "key": "testing", "secret": "testing"}, client
    finally:
        server.stop()
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
