"""``s3://``, ``gs://`` and ``hf://`` through fsspec: ranged ``cat_file`` reads, no read-ahead.

The ranged-read machinery (head block, merged parallel ranges, byte counts) is
:class:`ckpt_audit.storage.ranged.RangedSource`; this module only adapts an fsspec filesystem to it
and
maps backend errors to :class:`~ckpt_audit.errors.RemoteError`, retrying transient ones.
"""

from __future__ import annotations

import posixpath
import time
from collections.abc import Callable
from typing import Any

from ckpt_audit.errors import RemoteError
from ckpt_audit.storage.base import Location, inside_name
from ckpt_audit.storage.ranged import RangedSource, SharedState, cached_small

#: fsspec protocol -> (package that implements it, pip line)
_BACKENDS = {
    "s3": ("s3fs", "pip install 'ckpt-audit[remote]'  (s3fs)"),
    "gs": ("gcsfs", "pip install gcsfs"),
    "gcs": ("gcsfs", "pip install gcsfs"),
    "hf": ("huggingface_hub", "pip install huggingface_hub"),
}


def _call(what: str, url: str, retries: int, backoff: float, fn: Callable[[], Any]) -> Any:
    """Run one backend call; map errors to :class:`RemoteError`, retrying transient ones."""
    last: Exception | None = None
    for attempt in range(retries + 1):
        if attempt:
            time.sleep(backoff * (2 ** (attempt - 1)))
        try:
            return fn()
        except FileNotFoundError:
            raise RemoteError("not found", url) from None
        except PermissionError as exc:
            raise RemoteError(f"access denied ({exc})", url) from None
        except (OSError, TimeoutError, RuntimeError, ValueError) as exc:
            last = exc
        except Exception as exc:  # botocore/aiohttp errors have no common base we can import
            if type(exc).__name__ in ("NoCredentialsError", "ClientError"):
                raise RemoteError(f"{what} failed ({exc})", url) from None
            last = exc
    raise RemoteError(f"{what} failed after {retries + 1} attempts ({last})", url)


class FsspecSource(RangedSource):
    def __init__(self, fs: Any, path: str, url: str, shared: SharedState) -> None:
        super().__init__(url, shared, None)
        self._fs = fs
        self._path = path

    def _fetch(self, start: int, end: int) -> tuple[bytes, int | None]:
        size = self.size_known()
        if size is not None:
            end = min(end, size)
            if start >= end:
                return b"", None
        opts = self._shared.options
        data = _call(f"read of bytes {start}-{end - 1}", self.name, opts.retries, opts.backoff,
                     lambda: self._fs.cat_file(self._path, start=start, end=end))
        return bytes(data), None

    def size_known(self) -> int | None:
        if self._h.size is None:
            self._h.size = self._remote_size()
        return self._h.size

    def _remote_size(self) -> int:
        opts = self._shared.options
        info = _call("stat", self.name, opts.retries, opts.backoff,
                     lambda: self._fs.info(self._path))
        if info.get("type") == "directory":
            raise RemoteError("is a folder, not a file", self.name)
        return int(info["size"])


class FsspecLocation(Location):
    """A file or folder on an fsspec filesystem (``s3://``, ``gs://``, ``hf://``)."""

    def __init__(self, fs: Any, protocol: str, path: str, shared: SharedState) -> None:
        self._fs = fs
        self._protocol = protocol
        self.path = path.rstrip("/")
        self.display = f"{protocol}://{self.path}"
        self._shared = shared

    def _call(self, what: str, fn: Callable[[], Any]) -> Any:
        o = self._shared.options
        return _call(what, self.display, o.retries, o.backoff, fn)

    def child(self, name: str) -> FsspecLocation:
        name = inside_name(name, self.display)
        return FsspecLocation(self._fs, self._protocol, f"{self.path}/{name}", self._shared)

    def is_dir(self) -> bool:
        return bool(self._call("stat", lambda: self._fs.isdir(self.path)))

    def exists(self) -> bool:
        return bool(self._call("stat", lambda: self._fs.exists(self.path)))

    def listdir(self) -> list[str]:
        entries = self._call("listing", lambda: self._fs.ls(self.path, detail=False))
        return sorted(posixpath.basename(str(e).rstrip("/")) for e in entries)

    def open(self) -> FsspecSource:
        return FsspecSource(self._fs, self.path, self.display, self._shared)

    def read_bytes(self, limit: int = 64 * 1024 * 1024) -> bytes:
        """A small whole file, fetched once per location tree (readers may ask twice)."""
        return cached_small(self._shared, self.display, lambda: Location.read_bytes(self, limit))

    @property
    def name(self) -> str:
        return posixpath.basename(self.path)

    @property
    def bytes_read(self) -> int:
        return self._shared.counter.value


def filesystem(protocol: str, url: str, storage_options: dict[str, Any]) -> Any:
    """The fsspec filesystem for ``protocol``, or a :class:`RemoteError` saying what to install."""
    pkg, pip = _BACKENDS.get(protocol, (protocol, f"an fsspec backend for {protocol}://"))
    try:
        import fsspec
    except ImportError:
        raise RemoteError(
            f"{protocol}:// URLs need fsspec and {pkg}: pip install 'ckpt-audit[remote]'", url
        ) from None
    if protocol not in _BACKENDS:
        raise RemoteError(f"unsupported URL scheme {protocol}:// (supported: http, https, "
                          f"{', '.join(sorted(_BACKENDS))})", url)
    try:
        return fsspec.filesystem(protocol, **storage_options)
    except ImportError:
        raise RemoteError(f"{protocol}:// URLs need the {pkg} package: {pip}", url) from None
    except (ValueError, TypeError) as exc:  # unknown protocol, bad storage options
        raise RemoteError(f"cannot use {protocol}:// ({exc})", url) from None


