"""The vectorised statistics (one numpy pass over all gains) give the reference figures to the bit.

Truth: ``math.fsum`` over the float64 values (computed here, independently) for the norm and
mean, and the per-gain reference :func:`gain_stats` for every other field, compared with ``repr``
(so -0.0 vs 0.0, NaN and the extreme channels' order all count).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from ckpt_audit.core.stats import gain_stats, gain_stats_many
from ckpt_audit.records import Convention


def _bf16(x: np.ndarray) -> np.ndarray:
    return ((x.astype(np.float32).view(np.uint32) >> 16) << 16).view(np.float32)


def _gain(kind: str, n: int, rng: np.random.Generator) -> np.ndarray:
    makers = {
        "bf16": lambda: _bf16(rng.normal(0.6, 0.2, n)),
        "f16": lambda: rng.normal(0.0, 0.3, n).astype(np.float16).astype(np.float32),
        "f32": lambda: rng.normal(1.0, 0.1, n).astype(np.float32),
        "f64": lambda: rng.normal(1.0, 1e-3, n),
        "wide": lambda: (rng.normal(0, 1, n) * 10.0 ** rng.integers(-20, 20, n)).astype(np.float32),
        "tiny": lambda: rng.normal(0, 1, n) * 1e-310,
        "zeros": lambda: np.zeros(n, np.float32),
        "negzero": lambda: np.full(n, -0.0, np.float32),
        "ties": lambda: np.round(rng.normal(1, 0.3, n), 1).astype(np.float32),
        "ones": lambda: np.ones(n, np.float32),
    }
    g = makers[kind]()
    if kind == "f32" and n > 2:
        g[n // 2] = np.nan
    return g


@pytest.mark.parametrize("seed", range(8))
def test_many_equals_one_by_one_to_the_bit(seed: int) -> None:
    rng = np.random.default_rng(seed)
    kinds = ["bf16", "f16", "f32", "f64", "wide", "tiny", "zeros", "negzero", "ties", "ones"]
    values, convs = {}, {}
    for i in range(30):
        n = int(rng.choice([0, 1, 2, 5, 6, 64, 1536, 7168]))
        values[f"g{i}"] = _gain(kinds[int(rng.integers(len(kinds)))], n, rng)
        convs[f"g{i}"] = Convention.OFFSET if rng.integers(2) else Convention.DIRECT
    many = gain_stats_many(values, convs, 0.01)
    assert list(many) == list(values)
    for name, v in values.items():
        assert repr(many[name]) == repr(gain_stats(v, convs[name], 0.01)), name
        g = v.astype(np.float64) + (1.0 if convs[name] is Convention.OFFSET else 0.0)
        if g.size and np.isfinite(g).all():
            assert many[name].norm == math.sqrt(math.fsum((g * g).tolist()))
            assert many[name].mean == math.fsum(g.tolist()) / g.size


def test_extreme_ties_go_to_the_lower_index() -> None:
    ones = gain_stats(np.ones(7168, np.float32), Convention.DIRECT)
    assert [i for i, _ in ones.extreme] == [0, 1, 2, 3, 4]
    ties = np.array([1, 3, 3, 3, 1, 3, 3, 0.5, 3, 1], np.float32)
    assert [i for i, _ in gain_stats(ties, Convention.DIRECT).extreme] == [1, 2, 3, 5, 6]
