"""Every table command at 60, 80 and 120 columns: nothing wider than asked, every name whole or
elided at a component boundary (keeping its distinguishing end), numbers never split."""

from __future__ import annotations

import os
import re

import pytest

from tests.support.cli import run_cli
from tests.support.runs import all_ratios

NUMBER = re.compile(r"^[+-]?\d+\.\d+%?$")


def _rows(out: str) -> list[list[str]]:
    return [[c.strip() for c in ln.strip().strip("│").split("│")]
            for ln in out.splitlines() if ln.startswith("│")]


def _name_ok(cell: str, names: set[str]) -> bool:
    if cell in names:
        return True
    return cell.startswith("…") and any(
        n.endswith(cell[1:]) and n[-len(cell)] in "./" for n in names)


@pytest.mark.parametrize("width", [60, 80, 120])
def test_tables_fit(llama_run_master, width):
    a = os.path.join(llama_run_master, "checkpoint-0")
    b = os.path.join(llama_run_master, "checkpoint-400")
    names = set(all_ratios(a))
    for args, name_col in ((["diff", a, b], 0), (["audit", b], 0), (["trend", llama_run_master,
                                                                       "--roles", "all"], None)):
        res = run_cli([*args, "--width", str(width)])
        assert res.code in (0, 1), res.err
        lines = res.out.splitlines()
        assert max(len(ln) for ln in lines) <= width, (args, width)
        rows = _rows(res.out)
        assert rows, res.out
        for cells in rows:
            if name_col is not None and cells[0] and not cells[0].isdigit() \
                    and cells[0] not in {"final", "layer", "mtp"}:
                assert _name_ok(cells[0], names), (args, width, cells)
            for c in cells:  # a number is whole: never "15.21" on one line and "35" on the next
                assert not re.fullmatch(r"\d+", c) or len(c) < 6 or c.isdigit()
                if re.fullmatch(r"[+-]?\d*\.\d*", c):
                    assert NUMBER.match(c), (args, width, c)
    diff80 = run_cli(["diff", a, b, "--width", "80"]).out
    assert "model.norm.weight" in diff80  # short names stay whole
    assert "model.n…" not in diff80 and "model.l…" not in diff80
