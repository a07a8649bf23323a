"""The torch backend used by --device cuda, checked on CPU against the numpy reference."""

from __future__ import annotations

import numpy as np
import pytest

from ckpt_audit.core.stats import gain_stats
from ckpt_audit.core.stats_torch import gain_stats_torch
from ckpt_audit.errors import CkptAuditError
from ckpt_audit.records import Convention


def test_torch_backend_matches_numpy() -> None:
    rng = np.random.default_rng(0)
    values = {f"g{i}": rng.standard_normal(n).astype(np.float32) for i, n in
              enumerate((1, 64, 300, 7168))}
    values["bad"] = np.array([1.0, np.nan, 2.0], dtype=np.float32)
    convs = {k: Convention.OFFSET if k == "g2" else Convention.DIRECT for k in values}
    got = gain_stats_torch(values, convs, 0.01, "cpu")
    for k, v in values.items():
        ref = gain_stats(v, convs[k], 0.01)
        a, b = got[k], ref
        assert a.dim == b.dim and a.nonfinite == b.nonfinite
        assert [i for i, _ in a.extreme] == [i for i, _ in b.extreme]
        for f in ("norm", "ratio", "mean", "std", "min", "max", "near_zero"):
            x, y = getattr(a, f), getattr(b, f)
            assert (np.isnan(x) and np.isnan(y)) or x == pytest.approx(y, rel=1e-12, abs=1e-15)


def test_cuda_absent_is_a_clear_error() -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    from ckpt_audit.core.audit import pick_device

    with pytest.raises(CkptAuditError, match="no CUDA device"):
        pick_device("cuda")
    assert pick_device("auto") == "cpu"
