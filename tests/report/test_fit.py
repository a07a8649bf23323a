"""Name elision and column dropping (the rules of ckpt_audit.report.fit), in isolation."""

from __future__ import annotations

import io

from rich.console import Console

from ckpt_audit.report.fit import Column, add_row, elide, elide_common, fit_table

LONG = "model.layers.3.post_attention_layernorm.weight"


def test_elide_keeps_the_distinguishing_end_on_a_component_boundary():
    assert elide(LONG, 100) == LONG
    assert elide(LONG, 44) == "…layers.3.post_attention_layernorm.weight"
    assert elide(LONG, 36) == "…3.post_attention_layernorm.weight"
    assert elide(LONG, 10) == "…weight"  # never a cut inside a component


def test_elided_names_stay_distinct():
    names = ["model.layers.3.mlp.norm.weight", "mtp.layers.3.mlp.norm.weight"]
    short = elide_common(names, 20)
    assert len(set(short)) == 2
    assert all(n.endswith(s.lstrip("…")) for n, s in zip(names, short, strict=True))


def _render(width: int) -> list[str]:
    cols = [Column("tensor", "name"), Column("role", drop=3), Column("dim", "number", "right", 5),
            Column("ratio", "number", "right"), Column("status"), Column("severity", drop=4)]
    for i in range(3):
        add_row(cols, f"model.layers.{i}.post_attention_layernorm.weight", "layer", "4096",
                f"{15.2135 + i:.4f}", "explosion", "fail")
    con = Console(width=width, file=io.StringIO(), record=True, color_system=None)
    con.print(fit_table(cols, width))
    return con.export_text().splitlines()


def test_tables_fit_at_60_80_120_with_whole_numbers_and_names():
    for width in (60, 80, 120):
        lines = _render(width)
        assert max(len(ln) for ln in lines) <= width, (width, lines)
        rows = [ln for ln in lines if "layernorm" in ln]
        assert len(rows) == 3, lines  # a row never wraps onto a second line
        for i, row in enumerate(rows):
            cells = [c.strip() for c in row.strip("│").split("│")]
            name = f"model.layers.{i}.post_attention_layernorm.weight"
            assert cells[0] == name or (cells[0].startswith("…")
                                        and name.endswith(cells[0][1:])
                                        and name[-len(cells[0]):][0] in "./")
            assert f"{15.2135 + i:.4f}" in cells
    assert "left out to fit 60 columns: dim" in "\n".join(_render(60))
    assert "left out" not in "\n".join(_render(120))
