"""Where things are: the repository root, the shared real data beside it, the committed fixtures."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TESTS = ROOT / "tests"
DATA = TESTS / "data"
SHARED_DATA = ROOT.parent / "shared" / "data"
STORIES = SHARED_DATA / "stories260K.bin"


def require_data(reason: str) -> None:
    """Skip a test that needs real data, or fail when CKPT_AUDIT_REQUIRE_DATA=1 (CI)."""
    if os.environ.get("CKPT_AUDIT_REQUIRE_DATA") == "1":
        pytest.fail(f"required real data is missing: {reason}")
    pytest.skip(reason)
