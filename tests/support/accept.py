"""The accept run as the JSON document users get (typed result rendered by report.accept)."""

from __future__ import annotations

from typing import Any


def accept_json(*args: Any, **kwargs: Any) -> dict[str, Any]:
    """``to_dict(accept_run(...))``: what ``accept --format json`` prints."""
    from ckpt_audit.mtp.engine import accept_run
    from ckpt_audit.report.accept import to_dict

    return to_dict(accept_run(*args, **kwargs))
