"""Replicated tensors across model-parallel ranks (Megatron TP, Meta consolidated.NN.pth): the
copies of a gain must be bit-identical; any difference is one ``tp-mismatch`` finding (fail)."""

from __future__ import annotations

import numpy as np

from ckpt_audit.records import Finding, Severity


def replica_findings(name: str, labels: list[str], arrays: list[np.ndarray]) -> list[Finding]:
    """One finding per copy that differs from the first (``labels`` name each copy's rank)."""
    base = arrays[0]
    out = []
    for label, arr in zip(labels[1:], arrays[1:], strict=True):
        if arr.shape == base.shape and arr.tobytes() == base.tobytes():
            continue
        if arr.shape != base.shape:
            detail = f"shapes {base.shape} vs {arr.shape}"
        else:
            diff = np.abs(arr.astype(np.float64) - base.astype(np.float64))
            flat_a = arr.reshape(arr.size, -1).view(np.uint8)
            flat_b = base.reshape(base.size, -1).view(np.uint8)
            differ = int(np.count_nonzero(np.any(flat_a != flat_b, axis=1)))
            detail = f"{differ} of {base.size} channels differ, max |diff| = {diff.max():.6g}"
        out.append(Finding(
            Severity.FAIL, "tp-mismatch", name,
            f"tensor-parallel replicas of a replicated gain are not identical: "
            f"{labels[0]} vs {label}: {detail}",
        ))
    return out
