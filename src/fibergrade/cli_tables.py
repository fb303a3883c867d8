"""Per-lot tables of the command line: a rich ``Table`` for a few screens, aligned lines of
text for thousands of rows.

Rich lays out every cell of a ``Table`` (measures, pads and crops it, line by line): about
0.7 ms a row, so printing the 15,000 lots of one ``grade`` run took 10.5 s, against 1.3 s
to grade and store them (measured on 2 cores). Past :data:`MAX_BOXED_ROWS` rows the same
cells are laid out here as one styled text, with the columns aligned (about a second for
15,000 rows, building and printing): same columns, same cell texts and styles, without
the box.

Cells are literal text (``str``, never read as markup, so lot ids need no escaping) or
styled :class:`rich.text.Text`. This module only builds renderables; ``cli.py`` prints.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from rich.cells import cell_len
from rich.control import strip_control_codes
from rich.markup import escape
from rich.table import Table
from rich.text import Span, Text

#: the most rows laid out as a boxed rich Table (about a third of a second of rendering)
MAX_BOXED_ROWS = 500
#: between two columns of aligned text
GAP = "  "

Cell = str | Text


@dataclass(frozen=True)
class Column:
    """One column: its header and which side its cells keep to."""

    header: str
    justify: Literal["left", "right"] = "left"
    no_wrap: bool = False
    #: never shortened in a narrow terminal or a pipe (80 columns): an id a user will
    #: search for or copy; the other columns give way first
    whole: bool = False


def _text(cell: Cell) -> Text:
    return cell if isinstance(cell, Text) else Text(cell)


def table(
    title: str,
    columns: Sequence[Column],
    rows: Sequence[Sequence[Cell]],
    max_boxed_rows: int | None = None,
) -> Table | Text:
    """The rows as a rich Table, or past ``max_boxed_rows`` rows (default
    :data:`MAX_BOXED_ROWS`) as :func:`aligned` text lines.

    Every row must have one cell per column (``ValueError`` otherwise)."""
    for k, row in enumerate(rows):
        if len(row) != len(columns):
            raise ValueError(f"row {k} has {len(row)} cells for {len(columns)} columns")
    if len(rows) <= (MAX_BOXED_ROWS if max_boxed_rows is None else max_boxed_rows):
        t = Table(title=escape(title))
        cells = [[_text(cell) for cell in row] for row in rows]
        for k, c in enumerate(columns):
            # a whole column is at least as wide as its widest cell
            widest = (
                max([cell_len(c.header)] + [row[k].cell_len for row in cells]) if c.whole else None
            )
            t.add_column(
                c.header, justify=c.justify, no_wrap=c.no_wrap or c.whole, min_width=widest
            )
        for row in cells:
            t.add_row(*row)
        return t
    return aligned(title, columns, rows)


def aligned(title: str, columns: Sequence[Column], rows: Sequence[Sequence[Cell]]) -> Text:
    """A title line, a bold header, a rule, and one line per row: each column as wide as
    its widest cell (in terminal cells), its cells kept left or right as it says, columns
    :data:`GAP` apart, no blanks after the last cell. Cells keep their styles, and are
    never cut or wrapped (a line longer than the terminal wraps there).

    Built as one string and its style spans: a rich ``Text`` per cell costs ~10 us
    (control codes stripped, spans copied), a second for 15,000 rows of 7 cells."""
    title = _one_line(strip_control_codes(title))
    lines = [[_parts(Text(c.header, style="bold")) for c in columns]]
    lines += [[_parts(cell) for cell in row] for row in rows]
    widths = [max(width for _, _, width in col) for col in zip(*lines, strict=True)]
    lines.insert(1, [("─" * w, (), w) for w in widths])
    right = [c.justify == "right" for c in columns]
    last = len(columns) - 1
    chunks = [title]
    spans = [Span(0, len(title), "italic")]
    at = len(title)
    for line in lines:
        chunks.append("\n")
        at += 1
        for k, (text, cell_spans, width) in enumerate(line):
            pad = " " * (widths[k] - width)
            if right[k]:
                chunks.append(pad)
                at += len(pad)
            chunks.append(text)
            spans += [Span(at + sp.start, at + sp.end, sp.style) for sp in cell_spans]
            at += len(text)
            if k < last:
                gap = GAP if right[k] else pad + GAP
                chunks.append(gap)
                at += len(gap)
    return Text("".join(chunks), spans=spans, end="")


def _parts(cell: Cell) -> tuple[str, tuple[Span, ...], int]:
    """A cell's text on one line (control codes removed, as rich does; tabs and line
    breaks as blanks, which keep the columns), its style spans and its width in terminal
    cells."""
    if isinstance(cell, str):
        text = _one_line(strip_control_codes(cell))
        return text, (), cell_len(text)
    spans = tuple(cell.spans)
    if cell.style:
        spans = (Span(0, len(cell.plain), cell.style), *spans)
    text = _one_line(cell.plain)  # a Text holds no control codes; same length
    return text, spans, cell_len(text)


#: tab, line feed: one blank each (one for one, so a Text's spans stay in place)
_BLANKS = str.maketrans("\t\n", "  ")


def _one_line(text: str) -> str:
    return text.translate(_BLANKS)
