"""Byte access behind one small interface, so every reader works on local disk and remote URLs.

A :class:`Location` is a file or folder (a local path, or a URL). A :class:`ByteSource` reads byte
ranges of one file. Readers only ever ask for ranges: a header, then the bytes of each gain.
``bytes_read`` counts what was fetched.

Modules: ``base`` (the two interfaces), ``local`` (``os.pread``), ``ranged`` (head cache and
merged parallel ranges shared by every remote backend), ``http_client`` + ``http`` (HTTP(S)),
``fsspec_backend`` (``s3://``, ``gs://``, ``hf://``). This module picks one for a path.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from ckpt_audit.errors import RemoteError
from ckpt_audit.storage.base import ByteCounter, ByteSource, Location
from ckpt_audit.storage.local import LocalLocation, LocalSource, check_argument
from ckpt_audit.storage.options import RemoteOptions

__all__ = [
    "ByteCounter", "ByteSource", "Location", "LocalLocation", "LocalSource", "RemoteOptions",
    "is_url", "location", "remote_location", "remote_options",
]


#: The remote options of the command being run (``--timeout``, ``--allow-redirect-host``);
#: a context variable, set by :func:`remote_options`, never a module global that leaks.
_OPTIONS: ContextVar[RemoteOptions | None] = ContextVar("ckpt_audit_remote_options", default=None)


@contextmanager
def remote_options(options: RemoteOptions) -> Iterator[None]:
    """Every remote location opened inside the block uses ``options``."""
    token = _OPTIONS.set(options)
    try:
        yield
    finally:
        _OPTIONS.reset(token)


def is_url(path: str) -> bool:
    """True for ``scheme://...`` paths (``file://`` is local)."""
    return "://" in path and not path.startswith("file://")


def location(path: str) -> Location:
    """A :class:`Location` for a local path or a URL (``https://``, ``s3://``, ``hf://``...)."""
    if path.startswith("file://"):
        path = path[len("file://") :]
    if is_url(path):
        return remote_location(path)
    check_argument(path)
    return LocalLocation(path)


def remote_location(
    url: str,
    options: RemoteOptions | None = None,
    storage_options: dict[str, Any] | None = None,
) -> Location:
    """A :class:`Location` for a URL. ``storage_options`` go to the fsspec backend (e.g.
    ``{"endpoint_url": ...}`` for an S3-compatible store); ``CKPT_AUDIT_STORAGE_OPTIONS`` (JSON)
    in the environment does the same from the command line.

    The remote backends are imported here, on the first URL, so that a local audit never loads
    them (start-up time; see benchmarks/bench_audit.py). Nothing below imports this package back.
    """
    from ckpt_audit.storage.fsspec_backend import FsspecLocation, filesystem
    from ckpt_audit.storage.http import HttpLocation
    from ckpt_audit.storage.ranged import SharedState

    shared = SharedState(options or _OPTIONS.get() or RemoteOptions())
    scheme = urlsplit(url).scheme.lower()
    if scheme in ("http", "https"):
        parts = urlsplit(url)
        return HttpLocation(urlunsplit((scheme, parts.netloc, parts.path or "/", parts.query, "")),
                            shared)
    if storage_options is None:
        env = os.environ.get("CKPT_AUDIT_STORAGE_OPTIONS")
        try:
            storage_options = json.loads(env) if env else {}
        except json.JSONDecodeError as exc:
            raise RemoteError(f"CKPT_AUDIT_STORAGE_OPTIONS is not JSON ({exc})", url) from None
    protocol = "gs" if scheme == "gcs" else scheme
    fs = filesystem(protocol, url, storage_options or {})
    return FsspecLocation(fs, protocol, url.split("://", 1)[1], shared)
