"""Typed, frozen results of one ``accept`` run (JSON form: :mod:`ckpt_audit.report.accept`).

Every figure is defined in docs/MTP.md; the field names are the JSON keys (``lambda_`` is
``lambda``). Per-temperature figures are mappings keyed by :func:`temp_key` strings.
"""

from __future__ import annotations

from collections.abc import Mapping

from ckpt_audit.mtp.quant import Quantization
from ckpt_audit.records import frozen

SCHEMA = "ckpt-audit.accept/1"


def temp_key(t: float) -> str:
    """JSON key of a temperature: Python's ``str(float(T))`` ("1.0", "0.7")."""
    return str(float(t))


@frozen
class DepthFigures:
    """Teacher-forced figures of one MTP depth."""

    depth: int
    pairs: int
    greedy_acceptance: float | None
    sampled_acceptance: Mapping[str, float | None]
    label_accuracy: float | None
    label_pairs: int
    verifier_entropy: float | None
    draft_entropy: float | None
    cumulative_acceptance: float | None
    cumulative_sampled_acceptance: Mapping[str, float | None]


@frozen
class ChainFigures:
    """Every depth's figures and the expected tokens per verifier step they imply."""

    depths: tuple[DepthFigures, ...]
    expected_tokens_per_step: float
    expected_tokens_per_step_sampled: Mapping[str, float]


@frozen
class WhatIf:
    """The same figures with the trunk's final gain scaled by ``final_scale``."""

    kind: str
    final_scale: float
    final_gain_ratio: float
    chain: ChainFigures


@frozen
class SpeculateFigures:
    """The real greedy draft-and-verify loop (:mod:`ckpt_audit.mtp.speculate`)."""

    sequences: int
    generated_tokens: int
    verifier_calls: int
    mean_acceptance_length: float | None
    verifier_calls_per_token: float | None
    loop_drafted_positions: int
    acceptance_at_loop_drafted_positions: float | None
    all_positions: int
    acceptance_at_all_positions: float | None
    decision_mismatches: int
    prompt_tokens: int
    new_tokens: int


@frozen
class BlockGrad:
    """One block: gradient norms of the main and the MTP loss, and their ratio."""

    block: int
    main_grad_norm: float
    mtp_grad_norm: float
    ratio: float | None


@frozen
class GradBalance:
    """Gradient norms of the main loss and λ·MTP loss on the trunk's blocks."""

    lambda_: float
    main_grad_norm: float
    mtp_grad_norm: float
    ratio: float | None
    per_block: tuple[BlockGrad, ...]
    lambda_source: str


@frozen
class AcceptResult:
    """One accept run: what was loaded, what was scored, and every figure."""

    checkpoint: str
    layout: str
    concat_order: str
    device: str
    dtype: str
    stored_dtype: str
    quantization: Quantization | None
    world_size: int
    sequences: int
    positions: int
    batch_size: int
    max_logits_mb: float
    positions_per_chunk: int
    temperatures: tuple[str, ...]
    final_gain_ratio: float
    chain: ChainFigures
    notes: tuple[str, ...]
    what_if: tuple[WhatIf, ...] = ()
    speculate: SpeculateFigures | None = None
    grad_balance: GradBalance | None = None
    schema: str = SCHEMA
