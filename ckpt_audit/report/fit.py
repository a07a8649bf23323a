"""Tables that fit the terminal: columns drop in a declared order, long names lose their common
prefix (an ellipsis keeps the distinguishing end), numbers are never split.

Rules (tests/report/test_fit.py checks them at 60, 80 and 120 columns):

- a *name* (tensor, checkpoint) is never cut or wrapped mid-name: when too long it loses whole
  leading dotted (or ``/``) components, replaced by ``…``, keeping the end that tells rows apart
  (``…layers.3.post_attention_layernorm.weight``);
- a *number* cell never wraps;
- when the table is still too wide, columns are dropped by their ``drop`` rank (highest first;
  ``None`` = never dropped), and the table says which columns it left out.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from rich.table import Table
from rich.text import Text

ELLIPSIS = "…"
#: A name column is never narrower than this (then columns drop instead).
MIN_NAME = 24


@dataclass
class Column:
    """One column: ``kind`` is ``name`` (elided, never wrapped), ``number`` (never wrapped) or
    ``text`` (may wrap between words); ``drop`` orders which columns go first (high first)."""

    header: str
    kind: str = "text"
    justify: str = "left"
    drop: int | None = None
    cells: list[str | Text] = field(default_factory=list)

    def width(self) -> int:
        """Columns needed: the widest cell, and the header (a text header wraps between words)."""
        head = max(map(len, self.header.split())) if self.kind == "text" else len(self.header)
        return max([head] + [len(str(c)) for c in self.cells])


def add_row(columns: Sequence[Column], *cells: str | Text) -> None:
    """Append one row, a cell per column."""
    for c, cell in zip(columns, cells, strict=True):
        c.cells.append(cell)


def table_width(widths: Sequence[int]) -> int:
    """Rich's default box: ``│ a │ b │`` = Σ widths + 3 per column + 1."""
    return sum(widths) + 3 * len(widths) + 1


def split_parts(name: str) -> list[str]:
    """``a.b/c.d`` → ``["a.", "b/", "c.", "d"]`` (separators kept on the left part)."""
    parts, cur = [], ""
    for ch in name:
        cur += ch
        if ch in "./":
            parts.append(cur)
            cur = ""
    if cur:
        parts.append(cur)
    return parts


def elide(name: str, width: int) -> str:
    """``name`` shortened to at most ``width`` by dropping whole leading components (``…``
    marks the cut); if even the last component is longer, the full last component is kept."""
    if len(name) <= width:
        return name
    parts = split_parts(name)
    for i in range(1, len(parts)):
        tail = "".join(parts[i:])
        if len(tail) + 1 <= width:
            return ELLIPSIS + tail
    return ELLIPSIS + parts[-1]


def elide_common(names: Sequence[str | Text], width: int) -> list[str | Text]:
    """Elide each name to ``width``, keeping distinct names distinct (two names that would
    elide to the same text keep more of their start)."""
    out: list[str | Text] = [elide(n, width) if isinstance(n, str) else n for n in names]
    for _ in range(8):
        seen: dict[str, set[str]] = {}
        for orig, short in zip(names, out, strict=True):
            seen.setdefault(str(short), set()).add(str(orig))
        clash = {k for k, v in seen.items() if len(v) > 1}
        if not clash:
            break
        width += 8
        out = [elide(n, width) if isinstance(n, str) and str(s) in clash else s
               for n, s in zip(names, out, strict=True)]
    return out


def fit_table(columns: list[Column], width: int, **table_kwargs: object) -> Table:
    """A Rich table of ``columns`` that fits ``width`` (see the module docstring)."""
    cols = list(columns)
    full = {id(c): list(c.cells) for c in cols}
    dropped: list[str] = []
    while table_width([c.width() for c in cols]) > width:
        name_cols = [c for c in cols if c.kind == "name"]
        others = sum(c.width() for c in cols if c.kind != "name")
        budget = width - table_width([0] * len(cols)) - others
        if name_cols and budget // len(name_cols) >= MIN_NAME:
            per = budget // len(name_cols)
            for c in name_cols:
                c.cells = elide_common(full[id(c)], per)
            if table_width([c.width() for c in cols]) <= width:
                break
        droppable = [c for c in cols if c.drop is not None]
        if not droppable:
            for c in name_cols:  # last resort: names as short as their distinguishing end
                c.cells = elide_common(full[id(c)], MIN_NAME)
            break
        victim = max(droppable, key=lambda c: c.drop or 0)
        cols.remove(victim)
        dropped.append(victim.header)
    t = Table(**table_kwargs)  # type: ignore[arg-type]
    for c in cols:
        t.add_column(c.header, justify=c.justify,  # type: ignore[arg-type]
                     no_wrap=c.kind in ("name", "number"),
                     overflow="fold" if c.kind == "text" else "ellipsis")
    for row in zip(*[c.cells for c in cols], strict=True) if cols else ():
        t.add_row(*row)
    if dropped:
        t.caption = f"(left out to fit {width} columns: {', '.join(dropped)}; widen with --width)"
        t.caption_justify = "left"
    return t
