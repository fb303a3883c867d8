"""Vendor export files read through instrument profiles (``kind = "export"``).

A profile (see :mod:`fibergrade.adapters.profiles`) gives the delimiter, the decimal
separator (comma included), the encoding, the line of the header row, the header text of
each column fibergrade uses and the units; a new export format is a new profile, not new
code (DESIGN.md, "Interchange formats"). Two layouts:

``per-fibre-table`` -> :class:`fibergrade.measurements.FibreLots`
    one row per fibre snippet: lot id, diameter, and optionally length, curvature and a
    medullated flag (e.g. an OFDA-style export).
``histogram-table`` -> :class:`fibergrade.measurements.HistogramLots`
    one row per diameter class: lot id, class lower bound, optional upper bound (else
    ``class_width_um``), count (e.g. a Laserscan-style 1-um histogram, IWTO-12).

Rules (each violation is an :class:`fibergrade.errors.InputError` naming the file, the
1-based line as a text editor counts it, and what was expected):

* lines before ``header_line`` are the vendor's preamble and are skipped (but for the
  instrument id a profile's ``file.instrument_label`` points to, read by
  :func:`preamble_instrument`); blank lines and lines starting with the profile's
  ``comment`` prefix are skipped;
* every mapped column must be in the header; other columns are ignored;
* a data row has as many fields as the header; a field may be quoted, but a row may not
  span lines;
* numbers use the profile's decimal separator and ASCII digits and nothing else: ``16.5``
  in a decimal-comma file is refused (no guessing), as are thousands separators, exponents,
  other scripts' digits and a separator with no digit after it (``16,``: a truncated cell);
* columns are checked and converted whole (numpy), not fibre by fibre; the first bad cell
  of a column is the one refused, at its line;
* diameters (converted from mm when the profile says so) must pass
  :func:`fibergrade.measurements.diameter_problem`; curvature must be 0..9999.999 deg/mm;
  lengths > 0 mm; counts whole numbers >= 0; histogram classes within 0..200 um, sorted and
  not overlapping within a lot, and a class holding fibres may not lie wholly below 1 um
  (:func:`fibergrade.measurements.impossible_classes`, the per-fibre millimetre rule);
  every class, empty or not, lies within one whole micrometre, as the core's 1-um classes
  need (:func:`fibergrade.measurements.off_grid_classes`; ``[10.5, 11.5)`` is refused);
* the rows of a lot are contiguous: a lot id that reappears after another lot is refused;
* a lot id follows :data:`fibergrade.measurements.LOT_ID_RULE` (ASCII letters, digits,
  ``.``, ``_``, ``-``, the first a letter or digit, at most 200): lot ids name certificate
  files, so ``A/../x`` is refused at its line.
"""

from __future__ import annotations

import csv
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fibergrade.adapters.analyser import CURVATURE_MAX_DEG_MM
from fibergrade.adapters.errors import ProfileError
from fibergrade.adapters.profiles import ExportSettings, Profile
from fibergrade.errors import InputError
from fibergrade.measurements import (
    CLASS_GRID_EXPECTED,
    DIAMETER_MAX_UM,
    LOT_ID_RULE,
    MM_SUSPECT_BELOW_UM,
    FibreLots,
    HistogramLots,
    class_grid_problem,
    class_problem,
    diameter_problem,
    first_bad_lot_id,
    impossible_diameters,
    lot_id_problem,
)

#: one number as the profile's decimal separator writes it (ASCII digits only: Python's
#: float() would also take other scripts' digits). A separator needs a digit after it:
#: ``16,`` is a cell cut short (``16,5`` truncated?), refused rather than read as 16.0
#: [unsourced: no vendor export format is public (fibre.md, "Instruments"); the project's
#: rule, after DESIGN.md "bad frames become errors, never guesses"]
_NUM_TEXT = {
    ".": r"[+-]?(?:\d+(?:\.\d+)?|\.\d+)",
    ",": r"[+-]?(?:\d+(?:,\d+)?|,\d+)",
}
_NUM = {d: re.compile(rf"^{t}$", re.ASCII) for d, t in _NUM_TEXT.items()}
#: a whole column of numbers, one a line (the stripped cells joined by line breaks)
_NUM_COLUMN = {d: re.compile(rf"{t}(?:\n{t})*", re.ASCII) for d, t in _NUM_TEXT.items()}
_INT = re.compile(r"^\+?\d+$", re.ASCII)
_UNIT_FACTOR = {"um": 1.0, "mm": 1000.0}


def _number(text: str, decimal: str, path: Path, line: int, column: str) -> float:
    t = text.strip()
    if _NUM[decimal].match(t):
        return float(t.replace(",", "."))
    other = "," if decimal == "." else "."
    name = "decimal comma" if decimal == "," else "decimal point"
    if _NUM[other].match(t) and other in t:
        raise InputError(
            path,
            line,
            f"column {column!r}: {text!r} uses {other!r} as decimal separator, "
            f"but the profile declares a {name}",
            expected=f"a number written with {decimal!r}",
        )
    raise InputError(
        path,
        line,
        f"column {column!r}: {text!r} is not a number",
        expected=f"a number written with {decimal!r} (no exponent, no grouping)",
    )


def _number_column(
    texts: list[str], decimal: str, path: Path, lines: list[int], column: str
) -> np.ndarray:
    """A column of numbers as float64, checked and converted for all rows at once; the
    first cell that is not a number raises :func:`_number`'s error, naming its line."""
    cells = [t.strip() for t in texts]
    joined = "\n".join(cells)
    if _NUM_COLUMN[decimal].fullmatch(joined):
        if decimal == ",":
            cells = joined.replace(",", ".").split("\n")
        return np.array(cells, dtype=np.float64)
    for text, no in zip(texts, lines, strict=True):  # only to find the bad cell
        _number(text, decimal, path, no, column)
    raise AssertionError("a column refused as a whole has a bad cell")  # pragma: no cover


def _refuse_first(
    path: Path, lines: list[int], bad: np.ndarray, problem: Callable[[int], str], expected: str
) -> None:
    """Refuse the first row where ``bad`` holds, at its line (``problem(row)`` says why)."""
    hits = np.flatnonzero(bad)
    if hits.size:
        i = int(hits[0])
        raise InputError(path, lines[i], problem(i), expected=expected)


def _text_lines(path: Path, ex: ExportSettings) -> tuple[str, list[str]]:
    """The file's text in the profile's encoding and its lines (line breaks removed)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(path, None, f"cannot read: {exc.strerror or exc}") from None
    enc = "utf-8-sig" if ex.encoding.lower().replace("_", "-") in ("utf-8", "utf8") else ex.encoding
    try:
        text = data.decode(enc)
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise InputError(
            path,
            line,
            f"byte {data[exc.start]:#04x} is not valid {ex.encoding}",
            expected=f"text in {ex.encoding} (profile file.encoding)",
        ) from None
    lines = [x[:-1] if x.endswith("\r") else x for x in text.split("\n")]
    if lines and lines[-1] == "":
        lines.pop()  # the file's final line break
    return text, lines


def _split(path: Path, ex: ExportSettings, line_no: int, raw: str) -> list[str]:
    """One line's fields, as the csv module splits them with the profile's delimiter."""
    try:
        return next(csv.reader([raw], delimiter=ex.delimiter, strict=True))
    except (csv.Error, StopIteration) as exc:
        raise InputError(
            path,
            line_no,
            f"cannot split the row: {exc}",
            expected=f"fields separated by {ex.delimiter!r}",
        ) from None


def _rows(path: Path, ex: ExportSettings) -> tuple[list[str], int, list[tuple[int, list[str]]]]:
    """(header fields, header line number, [(line number, fields)]) of the data rows."""
    text, lines = _text_lines(path, ex)
    if len(lines) < ex.header_line:
        raise InputError(
            path,
            None,
            f"the file has {len(lines)} lines, no header row at line {ex.header_line}",
            expected="the header row the profile names",
        )

    header = [h.strip() for h in _split(path, ex, ex.header_line, lines[ex.header_line - 1])]
    # with no quote, stray carriage return or NUL anywhere, a row's fields are its text
    # between delimiters, exactly as the csv module splits it, about ten times faster
    plain = not any(c in text.replace("\r\n", "\n") for c in ('"', "\r", "\0"))
    comment = ex.comment or None  # str.startswith(None) is an error: no prefix, no comments
    data = [
        (no, raw)
        for no, raw in enumerate(lines[ex.header_line :], ex.header_line + 1)
        if (kept := raw.lstrip()) and not (comment and kept.startswith(comment))
    ]

    def fields_of(no: int, raw: str) -> list[str]:
        fields = raw.split(ex.delimiter) if plain else _split(path, ex, no, raw)
        if len(fields) != len(header):
            raise InputError(
                path,
                no,
                f"{len(fields)} fields, the header has {len(header)}",
                expected=f"{len(header)} fields separated by {ex.delimiter!r}",
            )
        return fields

    rows = [(no, fields_of(no, raw)) for no, raw in data]
    if not rows:
        raise InputError(
            path, None, "no data rows after the header", expected="at least one measurement row"
        )
    return header, ex.header_line, rows


@dataclass(frozen=True)
class PreambleInstrument:
    """The instrument an export file's preamble names: its id and the line naming it."""

    instrument_id: str
    line: int


def preamble_instrument(profile: Profile, path: str | Path) -> PreambleInstrument | None:
    """The instrument id the file's preamble gives, when the profile says where
    (``file.instrument_label``: the field before the id, as ``Instrument`` in
    ``Instrument,LS-DEMO-01,Date,2024-05-14``); None when the profile has no label or no
    preamble line carries it.

    Preamble lines are those before ``header_line``; a line carrying the label is split by
    the profile's delimiter, the others (comments, blank lines, the vendor's free text,
    which need not split as CSV) are skipped. The label with no id after it, or two lines naming
    different instruments, is an :class:`~fibergrade.errors.InputError` at its line: the
    id is read as written, never guessed."""
    ex = _export_settings(profile, profile.protocol)
    label = ex.instrument_label
    if label is None:
        return None
    path = Path(path)
    _, lines = _text_lines(path, ex)
    comment = ex.comment or None
    found: PreambleInstrument | None = None
    for no, raw in enumerate(lines[: ex.header_line - 1], 1):
        kept = raw.strip()
        if not kept or (comment and kept.startswith(comment)) or label not in raw:
            continue  # only a line that carries the label is split: the rest is free text
        fields = [f.strip() for f in _split(path, ex, no, raw)]
        if label not in fields:
            continue
        k = fields.index(label)
        ident = fields[k + 1] if k + 1 < len(fields) else ""
        if not ident:
            raise InputError(
                path,
                no,
                f"the preamble field {label!r} has no instrument id after it",
                expected=f"{label}{ex.delimiter}<instrument id> (profile file.instrument_label)",
            )
        if found is not None and found.instrument_id != ident:
            raise InputError(
                path,
                no,
                f"the preamble names instrument {ident!r} here and {found.instrument_id!r} "
                f"on line {found.line}",
                expected="one instrument per file",
            )
        if found is None:
            found = PreambleInstrument(ident, no)
    return found


def _column_index(
    path: Path, header: list[str], header_no: int, ex: ExportSettings
) -> dict[str, int]:
    idx = {}
    for fld, name in ex.columns.items():
        hits = [i for i, h in enumerate(header) if h == name]
        if not hits:
            raise InputError(
                path,
                header_no,
                f"column {name!r} (profile columns.{fld}) is not in the header",
                expected="one of " + ", ".join(repr(h) for h in header if h),
            )
        if len(hits) > 1:
            raise InputError(path, header_no, f"column {name!r} appears {len(hits)} times")
        idx[fld] = hits[0]
    return idx


def _lot_runs(path: Path, ids: list[str], lines: list[int]) -> tuple[tuple[str, ...], np.ndarray]:
    """Lot ids in order and CSR offsets from each row's lot id; refuses a lot that
    reappears after another lot."""
    lots = np.array(ids, dtype=object)
    starts = np.flatnonzero(np.r_[True, lots[1:] != lots[:-1]])
    run_ids = lots[starts].tolist()
    first_run: dict[str, int] = {}
    for k, lot in enumerate(run_ids):  # one per run of rows: per lot, not per fibre
        j = first_run.setdefault(lot, k)
        if j != k:
            raise InputError(
                path,
                lines[int(starts[k])],
                f"lot {lot!r} reappears after other lots (first seen at line "
                f"{lines[int(starts[j])]})",
                expected="the rows of each lot together",
            )
    offsets = np.append(starts, len(ids)).astype(np.int64)
    return tuple(run_ids), offsets


def _lot_ids(path: Path, texts: list[str], lines: list[int], column: str) -> list[str]:
    """Each row's lot id, stripped; one that :func:`fibergrade.measurements.lot_id_problem`
    refuses (empty, a path separator ...) is refused, naming its line. Each distinct id is
    checked once."""
    ids = [t.strip() for t in texts]
    bad = first_bad_lot_id(ids)
    if bad is not None:
        i = ids.index(bad[0])
        _lot_id(path, lines[i], texts[i], column)  # raises, in the one wording
    return ids


def _lot_id(path: Path, no: int, text: str, column: str) -> str:
    lot = text.strip()
    if not lot:
        raise InputError(path, no, f"column {column!r}: empty lot id", expected="a lot id")
    problem = lot_id_problem(lot)
    if problem is not None:
        raise InputError(
            path,
            no,
            f"column {column!r}: lot id {lot[:60]!r} {problem}",
            expected=f"a lot id of {LOT_ID_RULE}",
        )
    return lot


def read_per_fibre(profile: Profile, path: str | Path) -> FibreLots:
    """Read a per-fibre export (``per-fibre-table``) into :class:`FibreLots`.

    Columns are checked and converted whole (numpy), not fibre by fibre; the first bad
    cell of a column is refused with its line."""
    ex = _export_settings(profile, "per-fibre-table")
    path = Path(path)
    header, header_no, rows = _rows(path, ex)
    col = _column_index(path, header, header_no, ex)
    names = ex.columns
    factor = _UNIT_FACTOR[ex.diameter_unit]
    lines = [no for no, _ in rows]

    def texts(field: str) -> list[str]:
        c = col[field]
        return [f[c] for _, f in rows]

    def number_column(field: str) -> np.ndarray:
        return _number_column(texts(field), ex.decimal, path, lines, names[field])

    ids = _lot_ids(path, texts("lot_id"), lines, names["lot_id"])
    v = number_column("diameter") * factor

    def shown(i: int) -> str:
        text = f"{texts('diameter')[i].strip()} {ex.diameter_unit}"
        return text + (f" = {v[i]:g} um" if factor != 1 else "")

    # diameter_problem's rules, for the whole column
    _refuse_first(
        path,
        lines,
        impossible_diameters(v),
        lambda i: f"diameter {shown(i)} {diameter_problem(float(v[i]))}",
        f"0 < diameter <= {DIAMETER_MAX_UM:g} um",
    )
    diam = v.astype(np.float32)
    length = curv = med = None
    if "length" in col:
        with np.errstate(over="ignore"):  # as stored: 1e39 is infinite, refused below
            x = number_column("length").astype(np.float32)
        _refuse_first(
            path,
            lines,
            ~(np.isfinite(x) & (x > 0)),
            lambda i: f"length {x[i]:g} mm is not a positive finite length",
            "a length > 0 mm",
        )
        length = x
    if "curvature" in col:
        c = number_column("curvature")
        _refuse_first(
            path,
            lines,
            ~((c >= 0) & (c <= CURVATURE_MAX_DEG_MM)),
            lambda i: f"curvature {c[i]:g} deg/mm is impossible",
            f"0 .. {CURVATURE_MAX_DEG_MM:g} deg/mm",
        )
        curv = c.astype(np.float32)
    if "medullated" in col:
        flags = np.array([t.strip().lower() for t in texts("medullated")], dtype=object)
        med = np.isin(flags, ex.true_values)
        _refuse_first(
            path,
            lines,
            ~(med | np.isin(flags, ex.false_values)),
            lambda i: f"column {names['medullated']!r}: {flags[i]!r} is not a medullation flag",
            "one of " + ", ".join(ex.true_values + ex.false_values),
        )
    offsets_ids, offsets = _lot_runs(path, ids, lines)
    return FibreLots(
        offsets_ids, offsets, diam, length_mm=length, curvature_deg_mm=curv, medullated=med
    )


def read_histogram(profile: Profile, path: str | Path) -> HistogramLots:
    """Read a histogram export (``histogram-table``) into :class:`HistogramLots`."""
    ex = _export_settings(profile, "histogram-table")
    path = Path(path)
    header, header_no, rows = _rows(path, ex)
    col = _column_index(path, header, header_no, ex)
    names = ex.columns
    factor = _UNIT_FACTOR[ex.diameter_unit]
    n = len(rows)
    lo = np.empty(n, dtype=np.float64)
    hi = np.empty(n, dtype=np.float64)
    counts = np.empty(n, dtype=np.int64)
    lots: list[tuple[int, str]] = []
    prev: tuple[str, float] | None = None
    for i, (no, f) in enumerate(rows):
        lot = _lot_id(path, no, f[col["lot_id"]], names["lot_id"])
        lots.append((no, lot))
        a = _number(f[col["lower"]], ex.decimal, path, no, names["lower"]) * factor
        if "upper" in col:
            b = _number(f[col["upper"]], ex.decimal, path, no, names["upper"]) * factor
        else:
            assert ex.class_width_um is not None  # the profile loader guarantees it
            b = a + ex.class_width_um
        if not (0 <= a < b <= DIAMETER_MAX_UM) or not (math.isfinite(a) and math.isfinite(b)):
            raise InputError(
                path,
                no,
                f"class [{a:g}, {b:g}) um is impossible",
                expected=f"0 <= lower < upper <= {DIAMETER_MAX_UM:g} um",
            )
        if prev is not None and prev[0] == lot and a < prev[1] - 1e-9:
            raise InputError(
                path,
                no,
                f"class [{a:g}, {b:g}) um overlaps or precedes the "
                f"class before it (which ends at {prev[1]:g} um)",
                expected="classes of a lot in ascending order, not overlapping",
            )
        prev = (lot, b)
        ct = f[col["count"]].strip()
        if not _INT.match(ct):
            raise InputError(
                path,
                no,
                f"column {names['count']!r}: {ct!r} is not a count",
                expected="a whole number >= 0",
            )
        count = int(ct)
        # the per-fibre rule (diameter_problem) for a class: fibres wholly below 1 um are
        # refused as millimetres here too (measurements.impossible_classes)
        problem = class_problem(a, b, count)
        if problem is not None:
            raise InputError(
                path,
                no,
                problem,
                expected=f"classes of fibres at or above {MM_SUSPECT_BELOW_UM:g} um "
                f"(diameters in micrometres, profile units.diameter = {ex.diameter_unit!r})",
            )
        # the core's 1-um classes (measurements.off_grid_classes), empty classes included
        problem = class_grid_problem(a, b)
        if problem is not None:
            raise InputError(path, no, problem, expected=CLASS_GRID_EXPECTED)
        lo[i], hi[i], counts[i] = a, b, count
    ids, offsets = _lot_runs(path, [lot for _, lot in lots], [no for no, _ in lots])
    return HistogramLots(ids, offsets, lo, hi, counts)


def _export_settings(profile: Profile, protocol: str) -> ExportSettings:
    if profile.kind != "export" or profile.export is None or profile.protocol != protocol:
        raise ProfileError(
            str(profile.path),
            "instrument.protocol",
            f"is {profile.protocol!r}, this reader needs {protocol!r}",
        )
    return profile.export


def read_export(profile: Profile, path: str | Path) -> FibreLots | HistogramLots:
    """Read ``path`` as the profile says: per-fibre table or histogram table.

    The entry point for ``fibergrade import --instrument PROFILE FILE``.
    """
    if profile.kind != "export":
        raise ProfileError(
            str(profile.path),
            "instrument.kind",
            f"is {profile.kind!r}; importing a file needs an export profile",
        )
    if profile.protocol == "per-fibre-table":
        return read_per_fibre(profile, path)
    return read_histogram(profile, path)
