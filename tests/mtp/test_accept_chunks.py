"""Position chunks under --max-logits-mb: same figures as one pass, chunk size within budget."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from ckpt_audit.errors import CkptAuditError
from ckpt_audit.mtp import metrics
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
                                            probe_file: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    kw: dict[str, Any] = dict(loaded=loaded, temperatures=(1.0, 0.5, 0.0), what_if_renorm=True,
                              max_docs=6)
    # stories260K: vocab 512, 6 documents (one batch of 6), 3 temperatures, one depth: 0.6 MiB
    # holds 3 positions (2 logits tensors and 11 scratch buffers of 12 KiB a position)
    assert chunk_positions(0.6, 6, 512, 3, 1) == 3
    max_len = max(len(x["input_ids"]) for x in map(json.loads,
                  probe_file.read_text().splitlines()[:6]))
    whole = _numbers(accept_run(str(fixture_ckpt), str(probe_file), **kw))
    tiny = _numbers(accept_run(str(fixture_ckpt), str(probe_file), max_logits_mb=0.6, **kw))
    assert whole.keys() == tiny.keys()
    # the budget and the chunk actually used are reported; everything else is the same
    assert (tiny.pop("/max_logits_mb"), tiny.pop("/positions_per_chunk")) == (0.6, 3)
    assert whole.pop("/max_logits_mb") == 1024
    assert whole.pop("/positions_per_chunk") == max_len - 1  # one chunk: every position
    assert whole.pop("/batch_size") == tiny.pop("/batch_size") == 8
    assert any("sampled_acceptance/0.5" in k for k in whole)
    assert any(k.startswith("/what_if") for k in whole)
    # sub-blocks of 5 positions inside one whole-batch chunk (6 x 512 logits a position)
    monkeypatch.setattr(metrics, "SUB_ELEMS", 5 * 6 * 512)
    sub = _numbers(accept_run(str(fixture_ckpt), str(probe_file), **kw))
    assert sub.pop("/positions_per_chunk") == max_len - 1
    for key, v in whole.items():
        assert tiny[key] == pytest.approx(v, rel=1e-12, abs=1e-12), key
        assert sub.get(key) == pytest.approx(v, rel=1e-12, abs=1e-12), key


@pytest.mark.parametrize("budget,batch,vocab,temps,depths", [
    (1024, 8, 129_280, 1, 1), (1024, 1, 129_280, 3, 1), (1, 8, 129_280, 1, 1),
    (64, 4, 32_000, 2, 3), (0.6, 6, 512, 3, 1), (8, 8, 512, 1, 2), (1024, 8, 512, 2, 1)])
def test_chunk_respects_budget(budget: float, batch: int, vocab: int, temps: int,
                               depths: int) -> None:
    n = chunk_positions(budget, batch, vocab, temps, depths)
    row = batch * vocab * 4  # bytes of one position's [batch, vocab] float32 logits
    w = max(1, (1 << 20) // (batch * vocab))  # positions of a sub-block

    def held(c: int) -> int:  # the chunk's logits (verifier + each depth) + sub-block scratch
        return ((1 + depths) * c + (5 + 2 * temps) * min(w, c)) * row

    assert n >= 1
    if n > 1:
        assert held(n) <= budget * 2**20 < held(n + 1)
    # 1 GiB, batch 8, DeepSeek-V3 vocabulary, one depth: 126 positions a chunk, 1 MiB: one
    assert chunk_positions(1024, 8, 129_280, 1, 1) == 126
    assert chunk_positions(1, 8, 129_280, 1, 1) == 1


def test_budget_must_be_positive(loaded: Any, fixture_ckpt: Path, probe_file: Path) -> None:
    with pytest.raises(CkptAuditError, match="max-logits-mb"):
        accept_run(str(fixture_ckpt), str(probe_file), loaded=loaded, max_logits_mb=0)
