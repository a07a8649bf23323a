"""Renderers of an accept result (:class:`ckpt_audit.mtp.results.AcceptResult`): the JSON dict
of schema ``ckpt-audit.accept/1`` (:func:`to_dict`), Rich tables and the ``audit --probe`` block.
Pure functions of the result."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ckpt_audit.mtp.results import (
    AcceptResult,
    ChainFigures,
    DepthFigures,
    GradBalance,
    SpeculateFigures,
)


def depth_dict(d: DepthFigures) -> dict[str, Any]:
    return {"depth": d.depth, "pairs": d.pairs, "greedy_acceptance": d.greedy_acceptance,
            "sampled_acceptance": dict(d.sampled_acceptance),
            "label_accuracy": d.label_accuracy, "label_pairs": d.label_pairs,
            "verifier_entropy": d.verifier_entropy, "draft_entropy": d.draft_entropy,
            "cumulative_acceptance": d.cumulative_acceptance,
            "cumulative_sampled_acceptance": dict(d.cumulative_sampled_acceptance)}


def _chain(c: ChainFigures) -> dict[str, Any]:
    return {"depths": [depth_dict(d) for d in c.depths],
            "expected_tokens_per_step": c.expected_tokens_per_step,
            "expected_tokens_per_step_sampled": dict(c.expected_tokens_per_step_sampled)}


def speculate_dict(sp: SpeculateFigures) -> dict[str, Any]:
    return {"sequences": sp.sequences, "generated_tokens": sp.generated_tokens,
            "verifier_calls": sp.verifier_calls,
            "mean_acceptance_length": sp.mean_acceptance_length,
            "verifier_calls_per_token": sp.verifier_calls_per_token,
            "loop_drafted_positions": sp.loop_drafted_positions,
            "acceptance_at_loop_drafted_positions": sp.acceptance_at_loop_drafted_positions,
            "all_positions": sp.all_positions,
            "acceptance_at_all_positions": sp.acceptance_at_all_positions,
            "decision_mismatches": sp.decision_mismatches,
            "prompt_tokens": sp.prompt_tokens, "new_tokens": sp.new_tokens}


def grad_balance_dict(gb: GradBalance) -> dict[str, Any]:
    return {"lambda": gb.lambda_, "main_grad_norm": gb.main_grad_norm,
            "mtp_grad_norm": gb.mtp_grad_norm, "ratio": gb.ratio,
            "per_block": [{"block": b.block, "main_grad_norm": b.main_grad_norm,
                           "mtp_grad_norm": b.mtp_grad_norm, "ratio": b.ratio}
                          for b in gb.per_block],
            "lambda_source": gb.lambda_source}


def to_dict(r: AcceptResult) -> dict[str, Any]:
    """The JSON document (schema ``ckpt-audit.accept/1``; every key defined in docs/MTP.md)."""
    q = r.quantization
    out: dict[str, Any] = {
        "schema": r.schema, "checkpoint": r.checkpoint, "layout": r.layout,
        "concat_order": r.concat_order, "device": r.device, "dtype": r.dtype,
        "stored_dtype": r.stored_dtype,
        "quantization": None if q is None else {"method": q.method,
                                                "weight_block_size": list(q.block)},
        "world_size": r.world_size, "sequences": r.sequences, "positions": r.positions,
        "batch_size": r.batch_size, "max_logits_mb": r.max_logits_mb,
        "positions_per_chunk": r.positions_per_chunk,
        "temperatures": list(r.temperatures), "final_gain_ratio": r.final_gain_ratio,
        **_chain(r.chain), "notes": list(r.notes)}
    if r.what_if:
        out["what_if"] = [{"kind": w.kind, "final_scale": w.final_scale,
                           "final_gain_ratio": w.final_gain_ratio, **_chain(w.chain)}
                          for w in r.what_if]
    if r.speculate is not None:
        out["speculate"] = speculate_dict(r.speculate)
    if r.grad_balance is not None:
        out["grad_balance"] = grad_balance_dict(r.grad_balance)
    return out


def summary_dict(r: AcceptResult) -> dict[str, Any]:
    """The ``acceptance`` object ``audit --probe --format json`` adds to its report."""
    return {"schema": r.schema, "layout": r.layout, "positions": r.positions,
            "depths": [depth_dict(d) for d in r.chain.depths],
            "expected_tokens_per_step": r.chain.expected_tokens_per_step,
            "notes": list(r.notes)}


def _f(x: float | None, digits: int = 4) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def depth_table(title: str, depths: Sequence[Mapping[str, Any]], temps: Sequence[str]) -> Table:
    """One row per depth: pairs, greedy, sampled per T, cumulative, label accuracy, entropies."""
    t = Table(title=title, title_justify="left")
    t.add_column("depth", justify="right")
    t.add_column("pairs", justify="right")
    t.add_column("greedy", justify="right")
    for temp in temps:
        t.add_column(f"T={temp}", justify="right")
    t.add_column("cum.", justify="right")
    t.add_column("label", justify="right")
    t.add_column("H(p)", justify="right")
    t.add_column("H(q)", justify="right")
    for d in depths:
        t.add_row(str(d["depth"]), str(d["pairs"]), _f(d["greedy_acceptance"]),
                  *[_f(d["sampled_acceptance"][temp]) for temp in temps],
                  _f(d["cumulative_acceptance"]), _f(d["label_accuracy"]),
                  _f(d["verifier_entropy"], 3), _f(d["draft_entropy"], 3))
    t.caption = ("greedy: draft argmax = verifier argmax; T=x: mean Σ min(p_T, q_T); cum.: "
                 "greedy accepted through this depth; label: draft argmax = data (Megatron); "
                 "H: mean entropy (nats) of verifier p and draft q")
    t.caption_justify = "left"
    return t


def _weights(r: AcceptResult) -> str:
    """``float32`` or ``float32 (stored float8_e4m3fn+float32, fp8 blocks 128x128 dequantized)``."""
    if not r.stored_dtype or r.stored_dtype == r.dtype:
        return r.dtype
    q = r.quantization
    how = f", {q.method} blocks {q.block[0]}x{q.block[1]} dequantized" if q else ""
    return f"{r.dtype} (stored {r.stored_dtype}{how})"


def print_result(r: AcceptResult, console: Console) -> None:
    """The full human-readable report."""
    temps = r.temperatures
    console.print(f"[bold]{escape(r.checkpoint)}[/]  layout {r.layout} ({r.concat_order}), "
                  f"{r.sequences} sequences, {r.positions} tokens, {r.device} {_weights(r)}"
                  + (f", {r.world_size} ranks" if r.world_size > 1 else ""))
    console.print(depth_table("Teacher-forced acceptance",
                              [depth_dict(d) for d in r.chain.depths], temps))
    sampled = ", ".join(f"T={k}: {_f(v, 3)}" for k, v in
                        r.chain.expected_tokens_per_step_sampled.items())
    console.print(f"expected tokens per verifier step (bonus counted): greedy "
                  f"{_f(r.chain.expected_tokens_per_step, 3)}; sampled {sampled}")
    console.print(f"final gain ratio ‖γ‖₂/√d: {_f(r.final_gain_ratio, 3)}")
    for w in r.what_if:
        console.print(depth_table(
            f"What if the final gain were ×{w.final_scale:.4g} (ratio "
            f"{w.final_gain_ratio:.3f}, {w.kind})", [depth_dict(d) for d in w.chain.depths],
            temps))
        console.print(f"expected tokens per step: greedy "
                      f"{_f(w.chain.expected_tokens_per_step, 3)}")
    sp = r.speculate
    if sp is not None:
        console.print(
            f"[bold]speculate[/] (greedy loop, {sp.sequences} prompts, "
            f"{sp.generated_tokens} tokens): mean acceptance length "
            f"{_f(sp.mean_acceptance_length, 3)}, verifier calls per token "
            f"{_f(sp.verifier_calls_per_token, 3)}\n"
            f"  depth-1 acceptance at the positions the loop drafted at: "
            f"{_f(sp.acceptance_at_loop_drafted_positions)} "
            f"({sp.loop_drafted_positions} positions)\n"
            f"  depth-1 acceptance at all positions of the same continuations (teacher-forced): "
            f"{_f(sp.acceptance_at_all_positions)} ({sp.all_positions} positions)\n"
            f"  loop decisions differing from teacher-forced: {sp.decision_mismatches}")
    gb = r.grad_balance
    if gb is not None:
        t = Table(title=f"Gradient balance on the trunk's blocks (λ = {gb.lambda_:g}, "
                  f"{gb.lambda_source})", title_justify="left")
        for col in ("block", "‖∇L_main‖", "‖∇L_MTP‖", "λ·‖∇L_MTP‖/‖∇L_main‖"):
            t.add_column(col, justify="right")
        for b in gb.per_block:
            t.add_row(str(b.block), _f(b.main_grad_norm), _f(b.mtp_grad_norm), _f(b.ratio))
        t.add_row("all", _f(gb.main_grad_norm), _f(gb.mtp_grad_norm), _f(gb.ratio))
        console.print(t)
    for note in r.notes:
        console.print(f"[yellow]note:[/] {escape(note)}")


def _summary_temps(summary: Mapping[str, Any]) -> list[str]:
    depths = summary["depths"]
    return list(depths[0]["sampled_acceptance"]) if depths else []


def print_summary(summary: Mapping[str, Any], console: Console) -> None:
    """The ``audit --probe`` block (a :func:`summary_dict`)."""
    console.print(depth_table(f"MTP acceptance ({summary['layout']}, {summary['positions']} "
                              "probe tokens, teacher-forced)", summary["depths"],
                              _summary_temps(summary)))
    console.print("expected tokens per verifier step (bonus counted): "
                  f"{_f(summary['expected_tokens_per_step'], 3)}")


def summary_markdown(summary: Mapping[str, Any]) -> str:
    """The ``audit --probe`` block (a :func:`summary_dict`) as a Markdown section."""
    temps = _summary_temps(summary)
    head = ["depth", "pairs", "greedy", *[f"sampled T={t}" for t in temps], "label acc.",
            "H(verifier)", "H(draft)"]
    lines = [f"\n## MTP acceptance ({summary['layout']}, {summary['positions']} probe tokens)\n",
             "| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for d in summary["depths"]:
        row = [str(d["depth"]), str(d["pairs"]), _f(d["greedy_acceptance"]),
               *[_f(d["sampled_acceptance"][t]) for t in temps], _f(d["label_accuracy"]),
               _f(d["verifier_entropy"], 3), _f(d["draft_entropy"], 3)]
        lines.append("| " + " | ".join(row) + " |")
    lines.append(f"\nExpected tokens per verifier step (bonus counted): "
                 f"{_f(summary['expected_tokens_per_step'], 3)}. Definitions: docs/MTP.md.\n")
    return "\n".join(lines)
