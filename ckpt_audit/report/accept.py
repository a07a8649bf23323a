"""Rich tables for an accept result (the JSON dict of :func:`ckpt_audit.mtp.engine.accept_run`)."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table


def _f(x: float | None, digits: int = 4) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def depth_table(title: str, depths: list[dict[str, Any]], temps: list[str]) -> Table:
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


def print_result(res: dict[str, Any], console: Console) -> None:
    """The full human-readable report."""
    temps = res["temperatures"]
    console.print(f"[bold]{res['checkpoint']}[/]  layout {res['layout']} "
                  f"({res['concat_order']}), {res['sequences']} sequences, "
                  f"{res['positions']} tokens, {res['device']} {res['dtype']}"
                  + (f" (stored {res['stored_dtype']}"
                     + (f", {res['quantization']['method']} blocks "
                        + "x".join(map(str, res['quantization']['weight_block_size']))
                        + " dequantized" if res.get("quantization") else "") + ")"
                     if res.get("stored_dtype") else "")
                  + (f", {res['world_size']} ranks" if res["world_size"] > 1 else ""))
    console.print(depth_table("Teacher-forced acceptance", res["depths"], temps))
    sampled = ", ".join(f"T={k}: {_f(v, 3)}" for k, v in
                        res["expected_tokens_per_step_sampled"].items())
    console.print(f"expected tokens per verifier step (bonus counted): greedy "
                  f"{_f(res['expected_tokens_per_step'], 3)}; sampled {sampled}")
    console.print(f"final gain ratio ‖γ‖₂/√d: {_f(res['final_gain_ratio'], 3)}")
    for w in res.get("what_if", []):
        console.print(depth_table(
            f"What if the final gain were ×{w['final_scale']:.4g} (ratio "
            f"{w['final_gain_ratio']:.3f}, {w['kind']})", w["depths"], temps))
        console.print(f"expected tokens per step: greedy {_f(w['expected_tokens_per_step'], 3)}")
    sp = res.get("speculate")
    if sp:
        console.print(
            f"[bold]speculate[/] (greedy loop, {sp['sequences']} prompts, "
            f"{sp['generated_tokens']} tokens): mean acceptance length "
            f"{_f(sp['mean_acceptance_length'], 3)}, verifier calls per token "
            f"{_f(sp['verifier_calls_per_token'], 3)}\n"
            f"  depth-1 acceptance at the positions the loop drafted at: "
            f"{_f(sp['acceptance_at_loop_drafted_positions'])} "
            f"({sp['loop_drafted_positions']} positions)\n"
            f"  depth-1 acceptance at all positions of the same continuations (teacher-forced): "
            f"{_f(sp['acceptance_at_all_positions'])} ({sp['all_positions']} positions)\n"
            f"  loop decisions differing from teacher-forced: {sp['decision_mismatches']}")
    gb = res.get("grad_balance")
    if gb:
        t = Table(title=f"Gradient balance on the trunk's blocks (λ = {gb['lambda']:g}, "
                  f"{gb['lambda_source']})", title_justify="left")
        for col in ("block", "‖∇L_main‖", "‖∇L_MTP‖", "λ·‖∇L_MTP‖/‖∇L_main‖"):
            t.add_column(col, justify="right")
        for b in gb["per_block"]:
            t.add_row(str(b["block"]), _f(b["main_grad_norm"]), _f(b["mtp_grad_norm"]),
                      _f(b["ratio"]))
        t.add_row("all", _f(gb["main_grad_norm"]), _f(gb["mtp_grad_norm"]), _f(gb["ratio"]))
        console.print(t)
    for note in res.get("notes", []):
        console.print(f"[yellow]note:[/] {note}")


def print_summary(summary: dict[str, Any], console: Console) -> None:
    """The ``audit --probe`` block (an :func:`~ckpt_audit.mtp.engine.accept_summary` dict)."""
    temps = list(summary["depths"][0]["sampled_acceptance"]) if summary["depths"] else []
    console.print(depth_table(f"MTP acceptance ({summary['layout']}, {summary['positions']} "
                              "probe tokens, teacher-forced)", summary["depths"], temps))
    console.print("expected tokens per verifier step (bonus counted): "
                  f"{_f(summary['expected_tokens_per_step'], 3)}")


def summary_markdown(summary: dict[str, Any]) -> str:
    """The ``audit --probe`` block as a Markdown section."""
    temps = list(summary["depths"][0]["sampled_acceptance"]) if summary["depths"] else []
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
