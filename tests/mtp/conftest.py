"""Fixtures for the MTP tests: the real stories260K trunk (converted from ../shared/data at test
time, never committed) plus the committed trained depth-1 head, and a probe sampled from the
trunk itself. Built once per session; everything that needs the shared data skips without it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

HEAD = Path(__file__).parent / "data" / "stories260K_mtp1_head.safetensors"


@pytest.fixture(scope="session")
def fixture_ckpt(stories_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """HF-Llama stories260K + the committed trained MTP head at model.layers.5 (read-only)."""
    from safetensors.numpy import load_file

    from tests.support.mtp_fixture import make_fixture

    out = tmp_path_factory.mktemp("stories-mtp") / "ckpt"
    return make_fixture(stories_path, out, load_file(str(HEAD)))


@pytest.fixture(scope="session")
def trunk_model(stories_path: Path) -> Any:
    from tests.support.mtp_fixture import build_trunk, read_llama2c

    return build_trunk(read_llama2c(stories_path))


@pytest.fixture(scope="session")
def probe_ids(trunk_model: Any) -> list[list[int]]:
    """24 sequences sampled from the trunk (seeded, lengths 40..63: padding gets exercised)."""
    from tests.support.mtp_fixture import sample_sequences

    seqs = sample_sequences(trunk_model, 24, 64, seed=1234).tolist()
    return [s[: 40 + (7 * i) % 24] for i, s in enumerate(seqs)]


@pytest.fixture(scope="session")
def probe_file(probe_ids: list[list[int]], tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("probe") / "probe.jsonl"
    path.write_text("".join(json.dumps({"input_ids": s}) + "\n" for s in probe_ids))
    return path


@pytest.fixture(scope="session")
def loaded(fixture_ckpt: Path) -> Any:
    """The fixture loaded once (float32, CPU) for tests that pass ``loaded=`` to accept_run."""
    from ckpt_audit.mtp.loader import load

    return load(str(fixture_ckpt), device="cpu")
