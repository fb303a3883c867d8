"""Readers for the project's own interchange CSV formats.

The three formats below are the ones fibergrade documents and accepts (DESIGN.md,
"Interchange formats"). Vendor exports are read through instrument profiles instead.

Rules common to all three formats
---------------------------------
- Text is UTF-8. A UTF-8 byte-order mark at the start is accepted and ignored. Line ends
  may be LF or CRLF. Any other byte sequence that is not UTF-8 is refused, naming the line.
- Fields are separated by commas; standard CSV double quotes may enclose a field (a
  quoted field must end on the line where it starts).
- A line whose first non-blank character is ``#`` is a comment, before or after the header;
  blank lines are skipped.
- The first line that is neither blank nor a comment is the header. Column names are
  matched case-insensitively and surrounding spaces are ignored; every column needs a name
  and a name may appear only once. Columns may come in any order.
- Every data row has exactly as many fields as the header. Surrounding spaces in a field
  are ignored.
- Numbers use a decimal point (``17.5``, ``1.75e1``); ``NaN``, ``inf`` and empty fields
  are refused, because a missing or impossible value is never guessed, clipped or skipped.
- Line numbers in error messages are 1-based and count every line of the file (header,
  comments and blank lines included), as a text editor does.
- A lot id is 1 to 200 characters, each an ASCII letter, digit, ``.``, ``_`` or ``-``, the
  first a letter or digit (``measurements.LOT_ID_RULE``), in every file: per-fibre,
  histogram and manifest. Lot ids name certificate files, so anything that could leave the
  certificate folder or mean something to a file system (``/``, ``\\``, ``..`` at the start,
  ``:``, spaces, quotes, control and non-ASCII characters) is refused, naming the line.
- A file with a header but no data rows is refused ("no measurements"; for a manifest,
  "no lots").
- Which format a file is in is told from its header: ``diameter_um`` means per-fibre,
  ``lower_um,upper_um,count`` histogram, ``declared_type`` lot manifest.

Per-fibre CSV (one row per fibre measured)
------------------------------------------
Required columns ``lot_id,diameter_um``; optional ``length_mm``, ``curvature_deg_mm``,
``medullated``. Columns whose name starts with ``x_`` are ignored (free for the lab's own
notes); any other column is an error naming it, so a typo such as ``diamter_um`` is caught.

- ``diameter_um``: fibre diameter in micrometres, ``1 <= d <= 200``. A value <= 0 or above
  200 um is physically impossible; a value below 1 um (such as ``0.016``) is refused as a
  millimetre figure in the wrong column.
- ``length_mm``: fibre length in millimetres, > 0.
- ``curvature_deg_mm``: crimp curvature in degrees per millimetre, >= 0.
- ``medullated``: ``true``/``false``, ``yes``/``no`` or ``1``/``0`` (any letter case).

An optional column, when present, needs a value on every row. The rows of a lot need not be
contiguous: lots are taken in order of first appearance, and the fibres of a lot keep their
order in the file. Values are stored as float32.

Example::

    # lab 3, OFDA 2000, run 2024-05-14
    lot_id,diameter_um,length_mm,medullated
    MN-2024-0117,15.62,38.5,no
    MN-2024-0117,16.01,41.0,no

Histogram CSV (counts per diameter class, for instruments that report only histograms)
--------------------------------------------------------------------------------------
Columns ``lot_id,lower_um,upper_um,count`` (``x_`` columns ignored, others refused). A class
is ``[lower_um, upper_um)`` with ``0 <= lower_um < upper_um <= 200``; ``count`` is a whole
number >= 0 written without a decimal point. The classes of a lot may come in any order
(they are sorted by ``lower_um``) but must not overlap; gaps between classes are allowed. A
class with fibres in it may not lie wholly below 1 um (``upper_um <= 1``): the per-fibre
rule refuses such diameters as millimetres, and so does the histogram reader. Every class,
empty or not, must lie within one whole micrometre ``[k, k + 1)`` (1-um classes as Laserscan
and OFDA report them, or finer: ``14,15`` or ``14.5,15``, not ``10.5,11.5`` or ``10,12``),
since the core reports 1-um classes and a wider class would have to be spread by guesswork
(``measurements.off_grid_classes``).

Example::

    lot_id,lower_um,upper_um,count
    MN-2024-0120,14,15,212
    MN-2024-0120,15,16,388

Lot manifest CSV (what the lab knows about each lot)
----------------------------------------------------
Required columns ``lot_id,declared_type,origin,client``, each with a non-empty value on
every row. Optional columns ``region,gi_code,instrument_id,calibration_id,received_at,
measured_at`` (an empty value means unknown). Any other column is kept, as text, in the
lot's ``extra`` metadata under its lower-cased name.

- ``declared_type``: one of ``cashmere``, ``baby-camel``, ``adult-camel``, ``camel-hair``,
  ``yak``, ``wool`` (``measurements.FIBRE_TYPES``; any letter case, stored in lower case).
- ``received_at``, ``measured_at``: ISO 8601 date or date and time, such as ``2024-05-14``
  or ``2024-05-14T09:30:00+08:00``.
- A lot id listed twice with identical metadata is accepted once; listed twice with
  different metadata it is an error naming both lines and the fields that differ.

Example::

    lot_id,declared_type,origin,client,region,received_at
    MN-2024-0117,cashmere,MN,Gobi Fibre LLC,Govi-Altai,2024-05-10
"""

from __future__ import annotations

import codecs
import csv
import itertools
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Literal

import numpy as np

from fibergrade.errors import InputError
from fibergrade.measurements import (
    CLASS_GRID_EXPECTED,
    DIAMETER_MAX_UM,
    FIBRE_TYPES,
    LOT_ID_MAX_CHARS,
    LOT_ID_RULE,
    MM_SUSPECT_BELOW_UM,
    FibreLots,
    HistogramLots,
    LotMeta,
    class_grid_problem,
    class_problem,
    diameter_problem,
    first_bad_lot_id,
    impossible_classes,
    impossible_diameters,
    off_grid_classes,
)

__all__ = [
    "FIBRE_COLUMNS",
    "HISTOGRAM_COLUMNS",
    "MANIFEST_COLUMNS",
    "read_fibre_csv",
    "read_histogram_csv",
    "read_lot_manifest",
    "read_measurements",
    "sniff_format",
]

PathLike = str | Path
Format = Literal["fibres", "histogram", "manifest"]

#: required and optional columns of the per-fibre CSV
FIBRE_COLUMNS = (("lot_id", "diameter_um"), ("length_mm", "curvature_deg_mm", "medullated"))
#: required columns of the histogram CSV (it has no optional columns)
HISTOGRAM_COLUMNS = (("lot_id", "lower_um", "upper_um", "count"), ())
#: required and optional (known) columns of the lot manifest CSV
MANIFEST_COLUMNS = (
    ("lot_id", "declared_type", "origin", "client"),
    ("region", "gi_code", "instrument_id", "calibration_id", "received_at", "measured_at"),
)
_MANIFEST_TIMES = ("received_at", "measured_at")

#: prefix of columns that readers ignore
IGNORED_PREFIX = "x_"

_NUMBER_HELP = "a decimal number with a point as separator, such as 17.5"
# the number syntax accepted: ASCII only (Python's float() also takes '1_0' and other digits)
_FLOAT_RE = re.compile(r"\s*[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?\s*\Z", re.ASCII)
_NONFINITE_RE = re.compile(r"\s*[+-]?(?:nan|inf|infinity)\s*\Z", re.IGNORECASE | re.ASCII)
_INT_RE = re.compile(r"\s*[+-]?\d+\s*\Z", re.ASCII)
_FLOAT32_MAX = float(np.finfo(np.float32).max)
_BOOLEANS = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}


# --------------------------------------------------------------------------------------
# text and table layer
# --------------------------------------------------------------------------------------


def _read_text(path: PathLike) -> str:
    """The file decoded as UTF-8 (BOM dropped) with CRLF turned into LF."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise InputError(path, None, f"cannot read the file: {exc.strerror or exc}") from None
    if data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8) :]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _not_utf8(path, data, exc) from None
    if "\r" in text:
        text = text.replace("\r\n", "\n")
        cr = text.find("\r")
        if cr >= 0:
            raise InputError(
                path,
                text.count("\n", 0, cr) + 1,
                "a carriage return (CR) that does not end a CRLF line end",
                expected="lines ending in LF or CRLF",
            )
    return text


def _not_utf8(path: PathLike, data: bytes, exc: UnicodeDecodeError) -> InputError:
    line = data.count(b"\n", 0, exc.start) + 1
    column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
    return InputError(
        path,
        line,
        f"byte 0x{data[exc.start]:02x} at byte {column} of the line is not UTF-8 text",
        expected="a UTF-8 text file (save it as 'CSV UTF-8')",
    )


def _is_content(line: str) -> bool:
    """True for a line that is neither blank nor a comment."""
    stripped = line.lstrip()
    return bool(stripped) and stripped[0] != "#"


def _parse_header(path: PathLike, text: str, lineno: int) -> list[str]:
    try:
        fields = next(csv.reader([text]))
    except (csv.Error, StopIteration) as exc:
        raise InputError(path, lineno, f"the header row is not valid CSV: {exc}") from None
    return [f.strip().lower() for f in fields]


def _separator_hint(header: list[str]) -> str:
    """What to do about a header that is one field holding semicolons: a CSV saved by
    spreadsheet software where the decimal mark is a comma (fields split by ``;``)."""
    if len(header) == 1 and ";" in header[0]:
        return (
            "; the fields are separated by semicolons, as spreadsheet software saves CSV "
            "where the decimal mark is a comma: save it as comma-separated CSV with decimal "
            "points"
        )
    return ""


@dataclass
class _Table:
    """The rows of a CSV file as text columns, with the file line of every data row."""

    path: str
    header: list[str]
    header_line: int
    columns: dict[str, Sequence[str]]
    lines: np.ndarray  # int64[rows]: file line (1-based) of each data row

    @property
    def n_rows(self) -> int:
        return int(self.lines.size)

    def error(self, row: int, message: str, expected: str | None = None) -> InputError:
        """An InputError located at data row ``row``."""
        return InputError(self.path, int(self.lines[row]), message, expected=expected)

    def line(self, row: int) -> int:
        return int(self.lines[row])


def _read_table(
    path: PathLike,
    required: Sequence[str],
    optional: Sequence[str],
    *,
    extra: Literal["refuse", "keep"],
    kind: str,
    nothing: str,
) -> _Table:
    """Split a file into header and text columns, checking the layout of every row.

    ``extra`` says what to do with unknown columns: refuse them (``x_`` columns are dropped)
    or keep them. ``kind`` names the format in messages; ``nothing`` is the message for a
    file with a header but no data rows.
    """
    text = _read_text(path)
    lines = text.split("\n")
    # content lines (neither blank nor comment), found with C-level maps, not a Python loop
    content = np.fromiter(map(len, map(str.strip, lines)), dtype=np.int64, count=len(lines)) > 0
    if "#" in text:
        comment = map(str.startswith, map(str.lstrip, lines), itertools.repeat("#"))
        content &= ~np.fromiter(comment, dtype=np.bool_, count=len(lines))
    del text
    keep = np.flatnonzero(content)
    expected_header = ",".join(required)
    if not keep.size:
        raise InputError(
            path,
            None,
            "the file is empty or holds only comments: no header row",
            expected=f"a {kind} with header {expected_header}",
        )
    header_line = int(keep[0]) + 1
    header = _parse_header(path, lines[keep[0]], header_line)
    shown = ",".join(header)

    seen: set[str] = set()
    for k, name in enumerate(header, start=1):
        if not name:
            raise InputError(
                path,
                header_line,
                f"column {k} of the header has no name (a trailing comma?); header found: {shown}",
                expected="a name for every column",
            )
        if name in seen:
            raise InputError(path, header_line, f"column {name!r} appears twice in the header")
        seen.add(name)
    missing = [c for c in required if c not in seen]
    if missing:
        raise InputError(
            path,
            header_line,
            f"missing required column(s) {', '.join(missing)}; header found: {shown}"
            + _separator_hint(header),
            expected=f"a {kind} with header {expected_header}",
        )
    known = set(required) | set(optional)
    unknown = [c for c in header if c not in known and not c.startswith(IGNORED_PREFIX)]
    if unknown and extra == "refuse":
        allowed = ", ".join([*required, *optional])
        raise InputError(
            path,
            header_line,
            f"unknown column(s) {', '.join(repr(c) for c in unknown)}; header found: {shown}",
            expected=f"only the columns {allowed} (or a name starting with "
            f"{IGNORED_PREFIX!r} for a column to ignore)",
        )

    linenos = keep[1:] + 1  # file line (1-based) of every data row
    if not linenos.size:
        raise InputError(path, header_line, nothing, expected="data rows after the header")
    content[keep[0]] = False
    data_lines = list(itertools.compress(lines, content))
    del lines, content
    fields, widths = _split_fields(path, data_lines, linenos)
    del data_lines

    width = len(header)
    bad = np.flatnonzero(widths != width)
    if bad.size:
        r = int(bad[0])
        many = "too many" if widths[r] > width else "too few"
        raise InputError(
            path,
            int(linenos[r]),
            f"{many} fields: {int(widths[r])} field(s) but the header has {width} ({shown})",
            expected=f"{width} comma-separated fields on every row",
        )
    wanted = known | (set(header) if extra == "keep" else set())
    columns = {name: fields[j::width] for j, name in enumerate(header) if name in wanted}
    return _Table(str(path), header, header_line, columns, linenos)


def _split_fields(
    path: PathLike, data_lines: list[str], linenos: np.ndarray
) -> tuple[list[str], np.ndarray]:
    """All fields of all data lines, row after row, and the number of fields of each line.

    Without double quotes a line's fields are its comma-separated parts: the lines are
    joined and split once, which creates no per-row lists. With quotes the csv module
    parses them; every row must then come from exactly one line.
    """
    joined = ",".join(data_lines)
    if '"' not in joined:
        commas = map(str.count, data_lines, itertools.repeat(","))
        widths = np.fromiter(commas, dtype=np.int64, count=len(data_lines)) + 1
        return joined.split(","), widths
    del joined
    rows = _csv_rows(path, data_lines, linenos)
    widths = np.fromiter(map(len, rows), dtype=np.int64, count=len(rows))
    return list(itertools.chain.from_iterable(rows)), widths


def _csv_rows(path: PathLike, data_lines: list[str], linenos: np.ndarray) -> list[list[str]]:
    """Parse data lines with the csv module; every row must come from exactly one line."""
    try:
        rows: list[list[str]] | None = list(csv.reader(data_lines))
    except csv.Error:
        rows = None
    if rows is not None and len(rows) == len(data_lines):
        return rows
    # slow path, only for malformed files: find the line at fault
    reader = csv.reader(data_lines)
    done = 0
    while True:
        try:
            next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            at = min(max(reader.line_num, 1), len(data_lines))
            raise InputError(path, int(linenos[at - 1]), f"malformed CSV: {exc}") from None
        if reader.line_num != done + 1:
            raise InputError(
                path,
                int(linenos[done]),
                "a quoted field is not closed on this line",
                expected='a closing double quote (") before the end of the line',
            )
        done = reader.line_num
    raise InputError(path, None, "malformed CSV")  # pragma: no cover - defensive


# --------------------------------------------------------------------------------------
# column conversion, validated vectorised; the first bad row gives the line number
# --------------------------------------------------------------------------------------


def _first_bad_number(col: Sequence[str], pattern: re.Pattern[str]) -> int:
    """Index of the first text that is neither ``pattern`` nor NaN/infinity, or -1."""
    for i, s in enumerate(col):
        if not (pattern.match(s) or _NONFINITE_RE.match(s)):
            return i
    return -1


def _float_column(t: _Table, name: str) -> np.ndarray:
    """A text column as float64; text that is not a decimal number is an InputError.

    NaN and infinities parse here; callers refuse them with a message of their own.
    """
    col = t.columns[name]
    joined = "".join(col)
    arr: np.ndarray | None = None
    # Python's float() (which numpy uses) also takes '1_0' and non-ASCII digits; refuse those
    if joined.isascii() and "_" not in joined:
        try:
            arr = np.array(col, dtype=np.float64)
        except (ValueError, OverflowError):
            arr = None
    if arr is None:
        i = _first_bad_number(col, _FLOAT_RE)
        if i < 0:  # pragma: no cover - the patterns accept a subset of float()
            raise InputError(t.path, None, f"{name}: a value could not be read as a number")
        raise _number_error(t, i, name, col[i], _NUMBER_HELP)
    return arr


def _number_error(t: _Table, row: int, name: str, text: str, expected: str) -> InputError:
    if not text.strip():
        return t.error(
            row, f"{name} is empty; a missing value is refused, not guessed", expected=expected
        )
    return t.error(row, f"{name} {text!r} is not a number", expected=expected)


def _finite_problem(t: _Table, name: str, values: np.ndarray) -> None:
    bad = np.flatnonzero(~np.isfinite(values))
    if bad.size:
        i = int(bad[0])
        what = "is not a number (NaN)" if np.isnan(values[i]) else "is infinite"
        raise t.error(
            i,
            f"{name} {t.columns[name][i].strip()!r} {what}; a missing or impossible value is "
            "refused, not guessed",
            expected=_NUMBER_HELP,
        )


def _check_float32(t: _Table, name: str, values: np.ndarray) -> None:
    bad = np.flatnonzero(np.abs(values) > _FLOAT32_MAX)
    if bad.size:
        i = int(bad[0])
        raise t.error(i, f"{name} {t.columns[name][i].strip()!r} is too large to store")


def _diameters(t: _Table) -> np.ndarray:
    d = _float_column(t, "diameter_um")
    bad = np.flatnonzero(impossible_diameters(d))
    if bad.size:
        i = int(bad[0])
        value = float(d[i])
        problem = "is infinite" if np.isinf(value) else diameter_problem(value)
        if problem is None:  # pragma: no cover - mask and diameter_problem agree
            problem = "is out of range"
        raise t.error(
            i,
            f"diameter_um {t.columns['diameter_um'][i].strip()!r} {problem}",
            expected=f"a diameter in micrometres, {MM_SUSPECT_BELOW_UM:g} .. {DIAMETER_MAX_UM:g}",
        )
    return d


def _nonnegative(t: _Table, name: str, *, allow_zero: bool, unit: str) -> np.ndarray:
    v = _float_column(t, name)
    _finite_problem(t, name, v)
    bad = np.flatnonzero(v < 0 if allow_zero else v <= 0)
    if bad.size:
        i = int(bad[0])
        rule = ">= 0" if allow_zero else "> 0"
        raise t.error(
            i,
            f"{name} {t.columns[name][i].strip()!r} is "
            f"{'negative' if v[i] < 0 else 'zero'}; values are refused, never clipped",
            expected=f"a {unit} {rule}",
        )
    _check_float32(t, name, v)
    return v


def _booleans(t: _Table, name: str) -> np.ndarray:
    col = t.columns[name]
    mapping: dict[str, bool] = {}
    bad_values: set[str] = set()
    for s in set(col):  # a handful of distinct spellings, not one per fibre
        b = _BOOLEANS.get(s.strip().lower())
        if b is None:
            bad_values.add(s)
        else:
            mapping[s] = b
    if bad_values:
        i = next(i for i, s in enumerate(col) if s in bad_values)
        raise t.error(
            i,
            f"{name} {col[i].strip()!r} is not a yes/no value",
            expected="true/false, yes/no or 1/0",
        )
    return np.fromiter(map(mapping.__getitem__, col), dtype=np.bool_, count=len(col))


def _lot_column(t: _Table) -> list[str]:
    col = list(map(str.strip, t.columns["lot_id"]))
    lens = np.fromiter(map(len, col), dtype=np.int64, count=len(col))
    bad = np.flatnonzero((lens == 0) | (lens > LOT_ID_MAX_CHARS))
    if bad.size:
        i = int(bad[0])
        if lens[i] == 0:
            raise t.error(i, "lot_id is empty", expected="a lot id on every row")
        raise t.error(
            i,
            f"lot_id is {int(lens[i])} characters long",
            expected=f"a lot id of {LOT_ID_RULE}",
        )
    bad_lot = first_bad_lot_id(col)
    if bad_lot is not None:
        lot, problem = bad_lot
        raise t.error(
            col.index(lot), f"lot_id {lot!r} {problem}", expected=f"a lot id of {LOT_ID_RULE}"
        )
    return col


def _group(lots: list[str]) -> tuple[tuple[str, ...], np.ndarray, np.ndarray]:
    """Lots in order of first appearance, the stable row permutation and CSR offsets.

    ``dict.fromkeys`` lists the distinct ids in order of first appearance and ``map`` over a
    dict's ``__getitem__`` turns ids into codes, both at C speed; a stable argsort on the
    codes then makes each lot contiguous while keeping the order of its rows.
    """
    order = dict.fromkeys(lots)
    code_of = {lot: k for k, lot in enumerate(order)}
    codes = np.fromiter(map(code_of.__getitem__, lots), dtype=np.int64, count=len(lots))
    if np.all(codes[1:] >= codes[:-1]):  # lots already contiguous, the usual case
        perm = np.arange(codes.size, dtype=np.int64)
    else:
        perm = np.argsort(codes, kind="stable")
    offsets = np.zeros(len(code_of) + 1, dtype=np.int64)
    np.cumsum(np.bincount(codes, minlength=len(code_of)), out=offsets[1:])
    return tuple(order), perm, offsets


# --------------------------------------------------------------------------------------
# public readers
# --------------------------------------------------------------------------------------


def read_fibre_csv(path: PathLike) -> FibreLots:
    """Read a per-fibre CSV (see the module docstring) into a :class:`FibreLots`.

    Raises :class:`~fibergrade.errors.InputError` naming the file, line and the expected
    form for anything malformed or physically impossible; nothing is clipped or skipped.
    """
    required, optional = FIBRE_COLUMNS
    t = _read_table(
        path,
        required,
        optional,
        extra="refuse",
        kind="per-fibre CSV",
        nothing="no measurements: the file has a header but no data rows",
    )
    lots = _lot_column(t)
    diameter = _diameters(t)
    cols: dict[str, np.ndarray] = {}
    if "length_mm" in t.columns:
        cols["length_mm"] = _nonnegative(t, "length_mm", allow_zero=False, unit="length in mm")
    if "curvature_deg_mm" in t.columns:
        cols["curvature_deg_mm"] = _nonnegative(
            t, "curvature_deg_mm", allow_zero=True, unit="curvature in degrees per mm"
        )
    if "medullated" in t.columns:
        cols["medullated"] = _booleans(t, "medullated")
    lot_ids, perm, offsets = _group(lots)
    return FibreLots(
        lot_ids=lot_ids,
        offsets=offsets,
        diameter_um=diameter[perm].astype(np.float32),
        **{
            k: (v[perm].astype(np.float32) if v.dtype != np.bool_ else v[perm])
            for k, v in cols.items()
        },
    )


def _int_column(t: _Table, name: str) -> np.ndarray:
    col = t.columns[name]
    joined = "".join(col)
    expected = "a whole number >= 0, such as 212"
    if joined.isascii() and "_" not in joined:
        try:
            return np.array(col, dtype=np.int64)
        except (ValueError, OverflowError):
            pass
    for i, s in enumerate(col):
        if not _INT_RE.match(s):
            if _FLOAT_RE.match(s):
                raise t.error(i, f"{name} {s.strip()!r} is not a whole number", expected=expected)
            raise _number_error(t, i, name, s, expected)
        try:
            np.int64(int(s))
        except (ValueError, OverflowError):
            raise t.error(i, f"{name} {s.strip()!r} is too large", expected=expected) from None
    raise InputError(t.path, None, f"{name}: a value could not be read")  # pragma: no cover


def read_histogram_csv(path: PathLike) -> HistogramLots:
    """Read a histogram CSV (see the module docstring) into a :class:`HistogramLots`.

    Classes are grouped by lot in order of first appearance and sorted by lower bound within
    each lot; overlapping classes, negative or fractional counts and bounds outside
    0 .. 200 um are refused with an :class:`~fibergrade.errors.InputError`.
    """
    required, optional = HISTOGRAM_COLUMNS
    t = _read_table(
        path,
        required,
        optional,
        extra="refuse",
        kind="histogram CSV",
        nothing="no measurements: the file has a header but no data rows",
    )
    lots = _lot_column(t)
    lower = _float_column(t, "lower_um")
    _finite_problem(t, "lower_um", lower)
    upper = _float_column(t, "upper_um")
    _finite_problem(t, "upper_um", upper)
    bounds = f"class bounds within 0 .. {DIAMETER_MAX_UM:g} um"
    for name, values in (("lower_um", lower), ("upper_um", upper)):
        bad = np.flatnonzero((values < 0) | (values > DIAMETER_MAX_UM))
        if bad.size:
            i = int(bad[0])
            raise t.error(
                i, f"{name} {t.columns[name][i].strip()!r} is out of range", expected=bounds
            )
    bad = np.flatnonzero(upper <= lower)
    if bad.size:
        i = int(bad[0])
        raise t.error(
            i,
            f"class [{lower[i]:g}, {upper[i]:g}) is empty or reversed",
            expected="upper_um > lower_um",
        )
    counts = _int_column(t, "count")
    bad = np.flatnonzero(counts < 0)
    if bad.size:
        i = int(bad[0])
        raise t.error(
            i, f"count {int(counts[i])} is negative", expected="a whole number >= 0, such as 212"
        )
    # the per-fibre millimetre rule (diameter_problem) for classes: impossible_classes
    bad = np.flatnonzero(impossible_classes(upper, counts))
    if bad.size:
        i = int(bad[0])
        problem = class_problem(float(lower[i]), float(upper[i]), int(counts[i]))
        raise t.error(
            i,
            problem or "class holds fibres below the physical limit",
            expected=f"classes of fibres at or above {MM_SUSPECT_BELOW_UM:g} um "
            "(diameters in micrometres)",
        )
    # the core's 1-um classes (measurements.off_grid_classes): refused here, not at grading
    bad = np.flatnonzero(off_grid_classes(lower, upper))
    if bad.size:
        i = int(bad[0])
        problem = class_grid_problem(float(lower[i]), float(upper[i]))
        raise t.error(i, problem or "class spans more than one 1-um class", CLASS_GRID_EXPECTED)

    lot_ids, perm, offsets = _group(lots)
    # within each lot, sort classes by lower bound (lot order is already in perm)
    lot_of_row = np.repeat(np.arange(len(lot_ids), dtype=np.int64), np.diff(offsets))
    order = perm[np.lexsort((lower[perm], lot_of_row))]
    lo, hi = lower[order], upper[order]
    same_lot = lot_of_row[1:] == lot_of_row[:-1]
    clash = np.flatnonzero(same_lot & (lo[1:] < hi[:-1]))
    if clash.size:
        k = int(clash[0])
        a, b = int(order[k]), int(order[k + 1])
        first, second = sorted((a, b), key=t.line)
        raise t.error(
            second,
            f"class [{lower[second]:g}, {upper[second]:g}) on line {t.line(second)} overlaps "
            f"class [{lower[first]:g}, {upper[first]:g}) on line {t.line(first)} of lot "
            f"{lots[a]!r}",
            expected="classes of a lot that do not overlap",
        )
    return HistogramLots(
        lot_ids=lot_ids, offsets=offsets, lower_um=lo, upper_um=hi, counts=counts[order]
    )


def _declared_type(t: _Table, row: int, text: str) -> str:
    value = text.lower()
    if value not in FIBRE_TYPES:
        raise t.error(
            row,
            f"declared_type {text!r} is not a fibre type fibergrade grades",
            expected=f"one of {', '.join(FIBRE_TYPES)}",
        )
    return value


def read_lot_manifest(path: PathLike) -> dict[str, LotMeta]:
    """Read a lot manifest CSV (see the module docstring): lot id -> :class:`LotMeta`.

    Lots are returned in order of first appearance. A lot listed twice with identical
    metadata is kept once; conflicting entries raise :class:`~fibergrade.errors.InputError`.
    """
    required, optional = MANIFEST_COLUMNS
    t = _read_table(
        path,
        required,
        optional,
        extra="keep",
        kind="lot manifest CSV",
        nothing="no lots: the manifest has a header but no data rows",
    )
    lots = _lot_column(t)
    known = (*required, *optional)
    extra_names = [c for c in t.header if c not in known]
    out: dict[str, LotMeta] = {}
    first_row: dict[str, int] = {}
    for row, lot in enumerate(lots):
        values = {name: t.columns[name][row].strip() for name in known if name in t.columns}
        for name in required[1:]:
            if not values[name]:
                raise t.error(row, f"{name} is empty", expected=f"a {name} for every lot")
        values["declared_type"] = _declared_type(t, row, values["declared_type"])
        for name in _MANIFEST_TIMES:
            text = values.get(name)
            if text:
                try:
                    datetime.fromisoformat(text)
                except ValueError:
                    raise t.error(
                        row,
                        f"{name} {text!r} is not an ISO 8601 date or time",
                        expected="a date such as 2024-05-14 or 2024-05-14T09:30:00+08:00",
                    ) from None
        meta = LotMeta(
            lot_id=lot,
            **{k: (v or None) for k, v in values.items() if k != "lot_id"},
            extra={c: t.columns[c][row].strip() for c in extra_names},
        )
        if lot in out:
            before = out[lot].to_dict()
            now = meta.to_dict()
            if before != now:
                differ = [k for k in now if k != "extra" and now[k] != before[k]]
                differ += [
                    f"extra {k}" for k in extra_names if now["extra"][k] != before["extra"][k]
                ]
                raise t.error(
                    row,
                    f"lot {lot!r} on line {t.line(row)} conflicts with line "
                    f"{t.line(first_row[lot])}: {', '.join(differ)} differ",
                    expected="each lot listed once, or repeated with identical metadata",
                )
            continue
        out[lot] = meta
        first_row[lot] = row
    return out


def _header_fields(path: PathLike) -> tuple[list[str], int]:
    """The header row of a CSV file and its line number, reading only up to the header."""
    try:
        with Path(path).open("rb") as fh:
            for lineno, raw in enumerate(fh, start=1):
                if lineno == 1 and raw.startswith(codecs.BOM_UTF8):
                    raw = raw[len(codecs.BOM_UTF8) :]
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    err = _not_utf8(path, raw, exc)
                    err = InputError(path, lineno, err.message, expected=err.expected)
                    raise err from None
                line = line.removesuffix("\n").removesuffix("\r")
                if _is_content(line):
                    return _parse_header(path, line, lineno), lineno
    except OSError as exc:
        raise InputError(path, None, f"cannot read the file: {exc.strerror or exc}") from None
    raise InputError(
        path,
        None,
        "the file is empty or holds only comments: no header row",
        expected="a CSV file with a header row",
    )


def sniff_format(path: PathLike) -> Format:
    """Which interchange format a file is in, judged from its header row.

    ``"fibres"`` for a header with ``lot_id`` and ``diameter_um``, ``"histogram"`` for
    ``lot_id,lower_um,upper_um,count`` and ``"manifest"`` for ``lot_id`` and
    ``declared_type``; anything else is an :class:`~fibergrade.errors.InputError`.
    """
    header, lineno = _header_fields(path)
    names = set(header)
    if "lot_id" in names:
        if "diameter_um" in names:
            return "fibres"
        if {"lower_um", "upper_um", "count"} <= names:
            return "histogram"
        if "declared_type" in names:
            return "manifest"
    raise InputError(
        path,
        lineno,
        f"the header does not match any interchange format; header found: {','.join(header)}"
        + _separator_hint(header),
        expected="a per-fibre CSV (lot_id,diameter_um,...), a histogram CSV "
        "(lot_id,lower_um,upper_um,count) or a lot manifest (lot_id,declared_type,origin,client)",
    )


def read_measurements(path: PathLike) -> FibreLots | HistogramLots:
    """Read a per-fibre or histogram CSV, whichever the header says it is.

    A lot manifest is not measurements: passing one here is an InputError that says to pass
    it with ``--lots``.
    """
    kind = sniff_format(path)
    if kind == "fibres":
        return read_fibre_csv(path)
    if kind == "histogram":
        return read_histogram_csv(path)
    raise InputError(
        path,
        None,
        "this is a lot manifest, not measurements; pass it with --lots",
        expected="a per-fibre CSV or a histogram CSV",
    )
