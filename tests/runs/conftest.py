"""Fixtures for the runs/trend/compare/watch/monitor tests: run folders written by real writers.

``llama_run`` is a run of ``checkpoint-N`` folders written by transformers' ``save_pretrained``
for a tiny Llama whose final gain drifts (1.0 at step 0, healthy shrink, then collapse, then
explosion), sharded so that shard-level damage can be tested. Built once per session (~5 s).
"""

from __future__ import annotations

import shutil

import pytest

from tests.support.runs import write_run


@pytest.fixture(scope="session")
def llama_run_master(tmp_path_factory) -> str:
    return write_run(str(tmp_path_factory.mktemp("llama_run")))


@pytest.fixture()
def llama_run(llama_run_master, tmp_path) -> str:
    """A private copy of the session's run, free to damage."""
    dst = str(tmp_path / "run")
    shutil.copytree(llama_run_master, dst)
    return dst


@pytest.fixture(scope="session")
def llama_run_b(tmp_path_factory) -> str:
    """A second run: same seed, but layer 0's gains drift 30 % further after step 0."""
    return write_run(str(tmp_path_factory.mktemp("llama_run_b")), layer0_extra=1.3)
