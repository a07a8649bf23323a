"""Shared fixtures. Helpers live in tests/support/ and are imported as ``tests.support.…``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.cli import CliResult, run_cli
from tests.support.paths import STORIES, require_data


@pytest.fixture(scope="session")
def stories_path() -> Path:
    """The real pretrained llama2.c model in ../shared/data (skips with the reason if absent)."""
    if not STORIES.is_file():
        require_data(f"real model absent: {STORIES} (CI provides ../shared/data beside the repo)")
    return STORIES


@pytest.fixture
def cli() -> Callable[[list[str]], CliResult]:
    return run_cli
