"""A misbehaving HTTP server on 127.0.0.1: every case ends in a RemoteError (exit 2 class) within
its time budget, never reads a body past the length asked for, never requests ``..``."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from ckpt_audit.errors import CkptAuditError, RemoteError
from ckpt_audit.storage import RemoteOptions, remote_location
from tests.support.range_server import RangeServer

BUDGET = RemoteOptions(timeout=1.5, retries=3, backoff=0.05)


@contextmanager
def raw_server(respond: Callable[[socket.socket], None]) -> Iterator[str]:
    """A TCP server on loopback that answers each connection with ``respond(conn)``."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    srv.settimeout(0.2)
    stop = threading.Event()
    conns: list[socket.socket] = []

    def loop() -> None:
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except OSError:
                continue
            conns.append(conn)
            threading.Thread(target=_serve, args=(conn,), daemon=True).start()

    def _serve(conn: socket.socket) -> None:
        try:
            conn.recv(65536)
            respond(conn)
        except OSError:
            pass

    t = threading.Thread(target=loop, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{srv.getsockname()[1]}/model.safetensors"
    finally:
        stop.set()
        t.join()
        for c in conns:
            c.close()
        srv.close()


def _drip(conn: socket.socket) -> None:
    conn.sendall(b"HTTP/1.1 206 Partial Content\r\nContent-Range: bytes 0-65535/100000\r\n"
                 b"Content-Length: 65536\r\n\r\n")
    for _ in range(200):
        conn.sendall(b"x")
        time.sleep(0.25)


def _silent(conn: socket.socket) -> None:
    time.sleep(30)


def _huge_range(conn: socket.socket) -> None:
    conn.sendall(b"HTTP/1.1 206 Partial Content\r\n"
                 b"Content-Range: bytes 0-999999999/1000000000\r\n"
                 b"Content-Length: 1000000000\r\n\r\n" + b"x" * 65536)
    time.sleep(5)


def _long_body(conn: socket.socket) -> None:  # says 64 KiB, sends 8 MiB
    conn.sendall(b"HTTP/1.1 206 Partial Content\r\nContent-Range: bytes 0-65535/65536\r\n"
                 b"Content-Length: 8388608\r\n\r\n")
    try:
        for _ in range(128):
            conn.sendall(b"\0" * 65536)
    except OSError:
        pass


def _no_range(conn: socket.socket) -> None:
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 10000000000\r\n\r\n" + b"x" * 65536)
    time.sleep(5)


def _redirect_elsewhere(conn: socket.socket) -> None:
    conn.sendall(b"HTTP/1.1 302 Found\r\nLocation: http://localhost:9/evil.safetensors\r\n"
                 b"Content-Length: 0\r\n\r\n")


@pytest.mark.parametrize("respond, limit_s, fails", [
    (_drip, 2 * BUDGET.timeout + 3, True), (_silent, 2 * BUDGET.timeout + 3, True),
    (_huge_range, 6, True), (_no_range, 6, True), (_redirect_elsewhere, 6, True),
    (_long_body, 6, False),  # cut at the 64 KiB asked for: the extra 8 MiB are never read
])
def test_misbehaving_server_is_bounded(respond: Callable[[socket.socket], None],
                                       limit_s: float, fails: bool) -> None:
    import resource

    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    error: CkptAuditError | None = None
    with raw_server(respond) as url:
        src = remote_location(url, BUDGET).open()
        t0 = time.monotonic()
        try:
            src.read(0, 8)
            src.read(8, 1000)
        except CkptAuditError as exc:
            error = exc
        elapsed = time.monotonic() - t0
    assert elapsed < limit_s, (elapsed, str(error))
    assert (error is not None) == fails, error
    assert error is None or "model.safetensors" in str(error)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0 < 200 * 1024  # KiB


def test_redirect_to_another_host_is_refused_unless_allowed(tmp_path: Path) -> None:
    save_file({"model.norm.weight": np.ones(4, np.float32)}, str(tmp_path / "m.safetensors"))
    with RangeServer(str(tmp_path)) as target:
        def redirect(conn: socket.socket) -> None:
            loc = target.url("m.safetensors").replace("127.0.0.1", "localhost")
            conn.sendall(f"HTTP/1.1 302 Found\r\nLocation: {loc}\r\nContent-Length: 0\r\n"
                         "Connection: close\r\n\r\n".encode())

        with raw_server(redirect) as url:
            with pytest.raises(RemoteError, match="another host"):
                remote_location(url, BUDGET).open().read(0, 8)
            opts = RemoteOptions(timeout=5, retries=0, allow_redirect_host=True)
            assert len(remote_location(url, opts).open().read(0, 8)) == 8


def test_index_naming_parent_paths_is_never_requested(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    ck = tmp_path / "ck"
    ck.mkdir()
    save_file({"model.norm.weight": np.ones(4, np.float32)}, str(tmp_path / "evil.safetensors"))
    (ck / "model.safetensors.index.json").write_text(
        json.dumps({"weight_map": {"model.norm.weight": "../evil.safetensors"}}))
    from ckpt_audit.readers.registry import open_checkpoint
    from ckpt_audit.storage.http_client import HttpClient

    asked: list[str] = []
    send = HttpClient._send

    def spy(self: HttpClient, method: str, url: str, headers: dict[str, str]):  # type: ignore[no-untyped-def]
        asked.append(url)
        return send(self, method, url, headers)

    monkeypatch.setattr(HttpClient, "_send", spy)
    with RangeServer(str(tmp_path)) as srv:
        with pytest.raises(CkptAuditError, match="inside the checkpoint folder"):
            with open_checkpoint(srv.url("ck/")) as r:
                r.tensors()
    assert asked and not any("evil" in u or ".." in u for u in asked), asked


def test_the_audit_budget_bounds_all_reads_together() -> None:
    opts = RemoteOptions(timeout=10, retries=3, backoff=0.05, total_timeout=1.5)
    with raw_server(_drip) as url:
        t0 = time.monotonic()
        with pytest.raises(RemoteError, match="budget for the remote reads of one audit"):
            remote_location(url, opts).open().read(0, 8)
    assert time.monotonic() - t0 < 6


def test_cli_timeout_bounds_a_silent_server() -> None:
    from tests.support.hostile import cli, one_line

    with raw_server(_silent) as url:
        t0 = time.monotonic()
        err = one_line(cli("audit", url, "--timeout", "2", timeout=30))
    assert time.monotonic() - t0 < 15 and "model.safetensors" in err
