"""One base exception for every bad input; the CLI turns it into one line and exit code 2.

Every error names the file (or URL) it is about, so a user with 162 shards knows which one is bad.
"""

from __future__ import annotations

#: Characters a terminal or a Markdown/JUnit reader would obey rather than show: C0/C1 controls
#: (escape sequences, carriage return, newline), DEL, line/paragraph separators and the Unicode
#: bidirectional overrides. :func:`escape` makes each one visible.
_ESCAPES: dict[int, str] = {
    c: f"\\x{c:02x}" for c in (*range(0x20), *range(0x7F, 0xA0))
}
_ESCAPES.update({ord("\n"): "\\n", ord("\r"): "\\r", ord("\t"): "\\t"})
_ESCAPES.update({c: f"\\u{c:04x}" for c in (0x2028, 0x2029, *range(0x202A, 0x202F),
                                              *range(0x2066, 0x206A))})


def escape(text: object) -> str:
    """``text`` with every control character made visible (``\\n``, ``\\x1b``...), for
    untrusted strings (paths, tensor names, server text) printed to a terminal or a report.
    The one escape function: the error path and the renderers both use it."""
    s = str(text)
    return s if s.isprintable() else s.translate(_ESCAPES)


def error_text(exc: BaseException) -> str:
    """The one escaped stderr line for an input error."""
    return f"ckpt-audit: error: {escape(exc)}"


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


class IncompleteError(CkptAuditError):
    """A checkpoint is incomplete (a shard missing, an index naming an absent file, a partial
    file): it is never audited as passing."""
