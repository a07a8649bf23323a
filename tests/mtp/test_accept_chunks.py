"""Position chunks under --max-logits-mb: same figures as one pass, chunk size within budget."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from ckpt_audit.errors import CkptAuditError
from ckpt_audit.mtp.metrics import chunk_positions
from tests.support.accept import accept_json as accept_run


def _numbers(x: Any, path: str = "") -> dict[str, float]:
    """Every numeric leaf of the JSON document, by path."""
    if isinstance(x, dict):
        return {k: v for key, val in x.items() for k, v in _numbers(val, f"{path}/{key}").items()}
    if isinstance(x, list):
        return {k: v for i, val in enumerate(x) for k, v in _numbers(val, f"{path}/{i}").items()}
    if isinstance(x, int | float) and not isinstance(x, bool):
        return {path: float(x)}
    return {}


def test_tiny_budget_gives_the_same_figures(loaded: Any, fixture_ckpt: Path,
                                            probe_file: Path) -> None:
    kw: dict[str, Any] = dict(loaded=loaded, temperatures=(1.0, 0.5, 0.0), what_if_renorm=True,
                              max_docs=6)
    # stories260K: vocab 512, 6 documents (one batch of 6), 3 temperatures -> 135 KiB a
    # position; 0.3 MiB: 2 positions
    assert chunk_positions(0.3, 6, 512, 3) == 2
    max_len = max(len(x["input_ids"]) for x in map(json.loads,
                  probe_file.read_text().splitlines()[:6]))
    whole = _numbers(accept_run(str(fixture_ckpt), str(probe_file), **kw))
    tiny = _numbers(accept_run(str(fixture_ckpt), str(probe_file), max_logits_mb=0.3, **kw))
    assert whole.keys() == tiny.keys()
    # the budget and the chunk actually used are reported; everything else is the same
    assert (tiny.pop("/max_logits_mb"), tiny.pop("/positions_per_chunk")) == (0.3, 2)
    assert whole.pop("/max_logits_mb") == 1024
    assert whole.pop("/positions_per_chunk") == max_len - 1  # one chunk: every position
    assert whole.pop("/batch_size") == tiny.pop("/batch_size") == 8
    assert any("sampled_acceptance/0.5" in k for k in whole)
    assert any(k.startswith("/what_if") for k in whole)
    for key, v in whole.items():
        assert tiny[key] == pytest.approx(v, rel=1e-12, abs=1e-12), key


@pytest.mark.parametrize("budget,batch,vocab,temps", [
    (1024, 8, 129_280, 1), (1024, 1, 129_280, 3), (1, 8, 129_280, 1), (64, 4, 32_000, 2),
    (0.3, 6, 512, 3)])
def test_chunk_respects_budget(budget: float, batch: int, vocab: int, temps: int) -> None:
    n = chunk_positions(budget, batch, vocab, temps)
    per_position = batch * vocab * 4 * (8 + temps)  # float32 copies alive while a chunk scores
    assert n >= 1
    if n > 1:
        assert n * per_position <= budget * 2**20 < (n + 1) * per_position
    # 1 GiB, batch 8, DeepSeek-V3 vocabulary: 28 positions a chunk, 1 MiB: one at a time
    assert chunk_positions(1024, 8, 129_280, 1) == 28


def test_budget_must_be_positive(loaded: Any, fixture_ckpt: Path, probe_file: Path) -> None:
    with pytest.raises(CkptAuditError, match="max-logits-mb"):
        accept_run(str(fixture_ckpt), str(probe_file), loaded=loaded, max_logits_mb=0)
