"""One base exception for every bad input; the CLI turns it into one line and exit code 2.

Every error names the file (or URL) it is about, so a user with 162 shards knows which one is bad.
"""

from __future__ import annotations


class CkptAuditError(Exception):
    """A problem with the user's input: a bad file, a bad option, an unsupported layout.

    ``path`` is the file or folder the problem is about (shown first in the one-line message).
    """

    exit_code = 2

    def __init__(self, message: str, path: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.path = path

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class FormatError(CkptAuditError):
    """A checkpoint file is malformed (truncated, bad header, offsets outside the file...)."""


class UnsafePickleError(CkptAuditError):
    """A pickle asked for a global that is not on the allowlist; it was refused, never executed."""


class DetectionError(CkptAuditError):
    """No supported checkpoint layout was found where the user pointed."""


class PolicyError(CkptAuditError):
    """A policy file is malformed."""


class RemoteError(CkptAuditError):
    """A remote read failed (HTTP status, timeout, server ignoring Range...)."""
