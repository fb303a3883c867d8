"""Per-lot tables of the CLI: boxed for a few screens, aligned text lines past that."""

from __future__ import annotations

import io

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rich.cells import cell_len
from rich.console import Console
from rich.table import Table
from rich.text import Text

from fibergrade.cli_tables import GAP, MAX_BOXED_ROWS, Column, aligned, table

COLUMNS = [Column("lot"), Column("n", "right"), Column("grade")]

#: cell texts without blanks at their ends (a cell's own end blanks would be kept), with
#: wide (two-cell) CJK and Cyrillic letters among ASCII, tabs, line breaks and control
#: codes rich removes (BEL, CR)
cell_text = (
    st.text(alphabet=st.sampled_from("abcXYZ019-_./[]ЖӨүд漢字 \t\n\r\x07"), min_size=1, max_size=12)
    .map(str.strip)
    .filter(bool)
)


def shown(cell: str) -> str:
    """How a cell reads in aligned lines: control codes gone, tabs and line breaks blanks."""
    return cell.replace("\r", "").replace("\x07", "").replace("\t", " ").replace("\n", " ")


def render(renderable) -> str:
    console = Console(file=io.StringIO(), width=400, color_system=None, soft_wrap=True)
    console.print(renderable)
    return console.file.getvalue()


def test_a_few_rows_make_a_boxed_table_and_more_make_aligned_lines():
    few = [("L-1", "10", "cashmere")] * MAX_BOXED_ROWS
    assert isinstance(table("t", COLUMNS, few), Table)
    many = table("t", COLUMNS, [*few, ("L-2", "9", "none")])
    assert isinstance(many, Text)
    assert many.plain.splitlines()[-1] == "L-2  " + " " * 1 + "9  none"
    assert isinstance(table("t", COLUMNS, few[:3], max_boxed_rows=2), Text)


def test_cells_are_text_never_markup_in_either_form():
    rows = [("[red]L-1[/]", "1", "cashmere")]
    for form in (table("t [x]", COLUMNS, rows), aligned("t [x]", COLUMNS, rows)):
        out = render(form)
        assert "[red]L-1[/]" in out
        assert "t [x]" in out


def test_a_row_with_the_wrong_number_of_cells_is_refused():
    with pytest.raises(ValueError, match="row 1 has 2 cells for 3 columns"):
        table("t", COLUMNS, [("a", "1", "b"), ("a", "1")])


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(cell_text, cell_text, cell_text), max_size=20), cell_text)
def test_aligned_columns_line_up_in_terminal_cells(rows, title):
    lines = aligned(title, COLUMNS, rows).plain.split("\n")
    assert lines[0] == shown(title)
    assert len(lines) == len(rows) + 3
    header, rule, body = lines[1], lines[2], lines[3:]
    rows = [tuple(map(shown, row)) for row in rows]
    widths = [
        max(cell_len(x) for x in col) for col in zip(*[("lot", "n", "grade"), *rows], strict=True)
    ]
    assert rule == GAP.join("─" * w for w in widths)
    for line, cells in zip([header, *body], [("lot", "n", "grade"), *rows], strict=True):
        lot, n, grade = cells
        # left column: the cell, then blanks up to its width; right column: blanks first;
        # nothing after the last cell
        expected = (
            lot
            + " " * (widths[0] - cell_len(lot))
            + GAP
            + " " * (widths[1] - cell_len(n))
            + n
            + GAP
            + grade
        )
        assert line == expected


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.tuples(cell_text, cell_text, st.sampled_from(["red", "yellow", ""])), max_size=15)
)
def test_aligned_cells_keep_their_styles(rows):
    cells = [(lot, "1", Text(grade, style=style)) for lot, grade, style in rows]
    rendered = aligned("t", COLUMNS, cells)
    styled = [(rendered.plain[s.start : s.end], str(s.style)) for s in rendered.spans]
    assert styled[0] == ("t", "italic")
    assert styled[1:4] == [("lot", "bold"), ("n", "bold"), ("grade", "bold")]
    assert styled[4:] == [(shown(grade), style) for _, grade, style in rows if style]


def test_aligned_cells_keep_inner_spans_and_lose_control_codes():
    mark = Text("cashmere\t").append("UNCAL", style="red")
    rendered = aligned("a\r/store\x07", COLUMNS, [("L\r-1", "5", mark)])
    assert rendered.plain.splitlines() == [
        "a/store",
        "lot  n  grade",
        "───  ─  ──────────────",
        "L-1  5  cashmere UNCAL",
    ]
    styled = {str(s.style): rendered.plain[s.start : s.end] for s in rendered.spans}
    assert styled["italic"] == "a/store" and styled["red"] == "UNCAL"


def test_grade_cells_mark_no_grade_and_calibration():
    from fibergrade.cli import _grade_cell

    def cell(**rec):
        t = _grade_cell({"grade": "cashmere"} | rec)
        return t.plain, [(t.plain[s.start : s.end], str(s.style)) for s in t.spans], t.style

    assert cell() == ("cashmere", [], "")
    assert cell(grade=None) == ("none", [("none", "red")], "")
    assert cell(uncalibrated=True) == ("cashmere UNCAL", [("UNCAL", "red")], "")
    assert cell(calibration_range_flag="below") == ("cashmere <cal", [("<cal", "yellow")], "")
    assert cell(grade=None, calibration_range_flag="above")[:2] == (
        "none >cal",
        [("none", "red"), (">cal", "yellow")],
    )


def test_a_boxed_table_keeps_the_cells_colours():
    rows = [("L-1", "1", Text().append("none", style="red"))]
    console = Console(file=io.StringIO(), width=80, color_system="standard", force_terminal=True)
    console.print(table("t", COLUMNS, rows))
    assert "\x1b[31mnone\x1b[0m" in console.file.getvalue()


def test_an_empty_table_is_its_header():
    assert aligned("t", COLUMNS, []).plain == "t\nlot  n  grade\n───  ─  ─────"
